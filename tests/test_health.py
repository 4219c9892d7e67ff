from services.app import create_app
from tests.conftest import free_port, make_settings


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_checks_database_and_broker(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_fails_when_broker_unreachable(database_url, smtp_sink, db):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(make_settings(database_url, dead, smtp_sink.port))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("error")


def test_readyz_fails_when_database_unreachable(broker_url, smtp_sink):
    dead = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing"
    app = create_app(make_settings(dead, broker_url, smtp_sink.port))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"].startswith("error")
