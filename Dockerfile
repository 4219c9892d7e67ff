FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# Dependencies first (cached until pyproject.toml changes), using placeholder packages.
COPY pyproject.toml README.md ./
RUN mkdir -p services workers shared \
    && touch services/__init__.py workers/__init__.py shared/__init__.py \
    && pip install --no-cache-dir . \
    && rm -rf build ./*.egg-info services workers shared

# Then the project itself.
COPY . .
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
    && rm -rf build ./*.egg-info \
    && useradd --system --create-home --user-group --uid 10001 wellbeing \
    && mkdir -p /app/var \
    && chown wellbeing:wellbeing /app/var

USER wellbeing
EXPOSE 8000
CMD ["wellbeing", "api", "--host", "0.0.0.0", "--port", "8000"]
