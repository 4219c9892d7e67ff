"""Anonymity of report cells: the one place where the SPEC's "Anonymity" rule is made exact.

Pure domain code: plain functions and frozen dataclasses, no database, no Flask. The
aggregation layer hands in report cells with their member pseudonyms; `release()`
decides which cells may be shown to a viewer and returns `ReleasedCell`s that never
carry a pseudonym.

Model
-----
A report cell sums per-person values over a set of people (its members, as
pseudonyms). A viewer who sees several cells sees linear combinations of per-person
values, so a cell can leak through subtraction even when it is itself hidden. The
rules, applied in this order and then repeated until nothing changes (a fixed point):

1. Threshold (`check_k`): `k` is set per organisation, default 5, never below 3.
2. Primary suppression: a cell with fewer than `k` people is suppressed
   (`Reason.FEWER_THAN_K`).
3. Differencing against earlier releases: a cell whose member set differs from a set
   already released to this viewer (`ReleaseLogEntry`, any period) by a non-empty
   symmetric difference of fewer than `k` people is suppressed
   (`Reason.SMALL_DIFFERENCE`). This catches "a team that gained one member", "this week
   minus last week" and "two overlapping filters" asked one after the other.
4. Complementary suppression down the hierarchy (`parent_id`): for every released cell,
   its *remainder* (members not covered by its nearest released descendants, i.e.
   "parent minus visible children") must hold 0 or at least `k` people. While it holds
   1..k-1 people, the smallest nearest released descendant is suppressed too
   (descendants that would actually grow the remainder first, then fewest people,
   overlays before tree cells, then `group_id`), so a single suppressed child is only
   ever left alone when the remainder it belongs to already covers `k` people
   (`Reason.PROTECTS_SMALLER_GROUP`).
5. Overlapping cells in the same release (reporting lines across the department/team
   tree, two filters shown together): people are grouped into *regions* by the exact set
   of released cells that contain them. Every non-empty region must hold at least `k`
   people; a smaller region is merged into a neighbouring one by suppressing one more
   cell (first a cell whose removal merges the region with a region it is not yet part
   of - "a sibling" -, then a cell containing it; overlays before tree cells, fewest
   people first) (`Reason.PROTECTS_SMALLER_GROUP`).
   Why this is enough: every released cell's indicator vector is a sum of region
   indicators, so every linear combination of released cells is constant on each region;
   a non-zero combination therefore touches a whole region, i.e. at least `k` people.
   Nothing derivable from one release isolates fewer than `k` people.
6. A cell suppressed by rule 3 must not be rebuilt from the current release and then
   differenced against the earlier one: if its member set is a union of regions (the
   only way it can be a linear combination of released cells) one more cell is suppressed
   to merge one of its regions with a region outside it (`Reason.SMALL_DIFFERENCE`).
7. Everything the viewer has seen, together (exact, needs numpy): the logged sets and
   the cells about to be shown are compressed to regions; if some linear combination of
   them is non-zero only on regions holding fewer than `k` people in total, one of the
   shown cells taking part in that combination is suppressed (`Reason.SMALL_DIFFERENCE`)
   and the rules run again. This closes what the pairwise rule 3 cannot see, e.g. a cell
   hidden as a complement last week and shown this week while the complement pattern
   moved (last week's parent - last week's sibling - this week's cell = one person).
   It is linear algebra on a (logged + shown sets) x regions matrix: it is skipped, with
   a warning, above `EXACT_CHECK_LIMIT` entries - pass a bounded log (e.g. the last 13
   periods) - and when `exact_history_check=False`; rules 1-6 always apply.

Values are assumed not to change between periods (the worst case: a headcount, an
enrolment), so sets from different periods are compared as if they summed the same
numbers.

Differential privacy (optional, per organisation): `add_noise()` draws Laplace or
Gaussian noise through OpenDP (see `add_noise` for why), `PrivacyBudget` tracks the
epsilon (and delta) spent per period and refuses when exhausted, and `apply_noise()`
noises the values of a release and charges the budget once, with the cost worked out
per person (parallel composition over disjoint cells).
"""
from __future__ import annotations

import logging
import math
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from itertools import combinations
from types import MappingProxyType
from typing import Any, Literal

logger = logging.getLogger(__name__)

DEFAULT_K = 5
MIN_K = 3
DEFAULT_DELTA = 1e-6
PEOPLE_COUNT = "people_count"


class Reason(str, Enum):
    """Why a cell is suppressed. The value is the text shown to viewers."""

    FEWER_THAN_K = "fewer than k people"
    PROTECTS_SMALLER_GROUP = "suppressed to protect a smaller group"
    SMALL_DIFFERENCE = "would reveal a small difference from an earlier report"

    def explain(self, k: int) -> str:
        return f"fewer than {k} people" if self is Reason.FEWER_THAN_K else self.value


def check_k(k: Any) -> int:
    """Return `k` if it is a valid threshold (an int of at least 3), else raise ValueError."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be a whole number of people, got {k!r}")
    if k < MIN_K:
        raise ValueError(f"k must be at least {MIN_K}, got {k}")
    return k


def _frozen_values(values: Mapping[str, float] | None) -> Mapping[str, float]:
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True)
class Cell:
    """One report cell as built by the aggregation: a group for a period.

    `people` are the pseudonyms of everyone whose data feed `values` (for a pulse mean:
    the respondents, not the headcount). `parent_id` links departments to the
    organisation, teams to departments, a manager's line to the line above; every
    member of a cell must be a member of its parent. `people` is kept out of `repr` so
    a logged cell never prints pseudonyms.
    """

    group_id: str
    parent_id: str | None
    people: frozenset[str] = field(repr=False, hash=False)
    values: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if isinstance(self.people, (str, bytes)):
            raise ValueError("people must be a collection of pseudonyms, not a string")
        object.__setattr__(self, "people", frozenset(self.people))
        object.__setattr__(self, "values", _frozen_values(self.values))


@dataclass(frozen=True)
class ReleaseLogEntry:
    """A member set already released to a viewer (kept server-side, never shown)."""

    period: str
    people: frozenset[str] = field(repr=False, hash=False)
    group_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "people", frozenset(self.people))


@dataclass(frozen=True)
class ReleasedCell:
    """What a viewer may see of a cell: never its members.

    When `suppressed`, `people_count` and `values` are None and `reason` says why.
    """

    group_id: str
    parent_id: str | None
    suppressed: bool
    reason: Reason | None
    k: int
    people_count: int | None
    values: Mapping[str, float] | None

    @property
    def explanation(self) -> str | None:
        return self.reason.explain(self.k) if self.reason else None


# --------------------------------------------------------------------------- release


class _Work:
    """Working state of one `release()` call (internal, not exported)."""

    def __init__(self, cells: Sequence[Cell], overlays: Sequence[Cell], k: int) -> None:
        self.k = k
        self.order: list[str] = []
        self.by_id: dict[str, Cell] = {}
        self.overlay: set[str] = set()
        for cell in (*cells, *overlays):
            if not isinstance(cell, Cell):
                raise ValueError(f"expected a Cell, got {type(cell).__name__}")
            if cell.group_id in self.by_id:
                raise ValueError(f"duplicate group_id {cell.group_id!r}")
            self.by_id[cell.group_id] = cell
            self.order.append(cell.group_id)
        self.overlay = {c.group_id for c in overlays}
        self.children: dict[str, list[str]] = defaultdict(list)
        for gid in self.order:
            cell = self.by_id[gid]
            if cell.parent_id is None:
                continue
            parent = self.by_id.get(cell.parent_id)
            if parent is None:
                raise ValueError(f"cell {gid!r} names unknown parent {cell.parent_id!r}")
            if not cell.people <= parent.people:
                raise ValueError(f"cell {gid!r} has members that are not members of its parent {cell.parent_id!r}")
            self.children[cell.parent_id].append(gid)
        for gid in self.order:  # reject cycles in parent_id
            seen = {gid}
            parent_id = self.by_id[gid].parent_id
            while parent_id is not None:
                if parent_id in seen:
                    raise ValueError(f"cycle in parent_id through {gid!r}")
                seen.add(parent_id)
                parent_id = self.by_id[parent_id].parent_id
        self.reason: dict[str, Reason] = {}
        self.exact = True
        self.exact_skipped = False

    def released(self, gid: str) -> bool:
        return gid not in self.reason

    def size(self, gid: str) -> int:
        return len(self.by_id[gid].people)

    def suppress(self, gid: str, reason: Reason) -> bool:
        if gid in self.reason:
            return False
        self.reason[gid] = reason
        return True

    def suppress_first_key(self, gid: str) -> tuple[int, int, str]:
        """Order in which candidates are suppressed: overlays, then fewest people, then id."""
        return (0 if gid in self.overlay else 1, self.size(gid), gid)

    # rule 2 ------------------------------------------------------------------
    def primary(self) -> None:
        for gid in self.order:
            if self.size(gid) < self.k:
                self.suppress(gid, Reason.FEWER_THAN_K)

    # rule 3 ------------------------------------------------------------------
    def differencing(self, log: Sequence[ReleaseLogEntry]) -> None:
        if not log:
            return
        k = self.k
        sizes = sorted((len(e.people), i) for i, e in enumerate(log))
        size_keys = [s for s, _ in sizes]
        index: dict[str, list[int]] = defaultdict(list)
        for i, entry in enumerate(log):
            for person in entry.people:
                index[person].append(i)
        for gid in self.order:
            if not self.released(gid):
                continue
            people = self.by_id[gid].people
            n = len(people)
            lo, hi = bisect_left(size_keys, n - k + 1), bisect_right(size_keys, n + k - 1)
            by_size = hi - lo  # entries whose size alone allows a small difference
            by_person = sum(len(index.get(p, ())) for p in people)
            if by_size <= by_person:
                candidates: Iterable[int] = (i for _, i in sizes[lo:hi])
                small = any(0 < len(people ^ log[i].people) < k for i in candidates)
            else:
                # released cells have >= k people, so only entries sharing someone can be close
                overlap: Counter[int] = Counter()
                for p in people:
                    overlap.update(index.get(p, ()))
                small = any(0 < n + len(log[i].people) - 2 * shared < k for i, shared in overlap.items())
            if small:
                self.suppress(gid, Reason.SMALL_DIFFERENCE)

    # rule 4 ------------------------------------------------------------------
    def nearest_released_descendants(self, gid: str) -> list[str]:
        found, stack = [], list(self.children.get(gid, ()))
        while stack:
            child = stack.pop()
            if self.released(child):
                found.append(child)
            else:
                stack.extend(self.children.get(child, ()))
        return found

    def remainder(self, gid: str) -> frozenset[str]:
        covered: set[str] = set()
        for desc in self.nearest_released_descendants(gid):
            covered |= self.by_id[desc].people
        return self.by_id[gid].people - covered

    def complementary(self) -> bool:
        changed = False
        for gid in self.order:
            while self.released(gid):
                hidden = len(self.remainder(gid))
                if hidden == 0 or hidden >= self.k:
                    break
                candidates = self.nearest_released_descendants(gid)
                if not candidates:  # cannot happen for a released cell (it has >= k people)
                    self.suppress(gid, Reason.PROTECTS_SMALLER_GROUP)
                    changed = True
                    break
                victim = min(
                    candidates, key=lambda c: (len(self.remainder(c)) == 0, *self.suppress_first_key(c))
                )
                self.suppress(victim, Reason.PROTECTS_SMALLER_GROUP)
                changed = True
        return changed

    # rules 5 and 6 -----------------------------------------------------------
    def regions(self) -> tuple[dict[str, frozenset[str]], Counter[frozenset[str]]]:
        """Signature of every person in a released cell, and the size of each region."""
        sig: dict[str, set[str]] = defaultdict(set)
        for gid in self.order:
            if self.released(gid):
                for person in self.by_id[gid].people:
                    sig[person].add(gid)
        frozen = {person: frozenset(s) for person, s in sig.items()}
        return frozen, Counter(frozen.values())

    def merge_candidate(
        self, region: frozenset[str], sizes: Counter[frozenset[str]], avoid: set[frozenset[str]]
    ) -> str:
        """The cell to suppress so that `region` merges with a neighbouring region not in `avoid`."""
        down = [
            next(iter(other - region))
            for other in sizes
            if len(other) == len(region) + 1 and region < other and other not in avoid
        ]
        if down:
            return min(down, key=self.suppress_first_key)
        up_merging = [g for g in region if (region - {g}) in sizes and (region - {g}) not in avoid]
        return min(up_merging or list(region), key=self.suppress_first_key)

    def small_regions(self) -> bool:
        _, sizes = self.regions()
        victims = {
            self.merge_candidate(region, sizes, set())
            for region, n in sorted(sizes.items(), key=lambda item: (item[1], sorted(item[0])))
            if n < self.k
        }
        return any([self.suppress(victim, Reason.PROTECTS_SMALLER_GROUP) for victim in sorted(victims)])

    def rebuildable_differences(self) -> bool:
        sig, sizes = self.regions()
        victims: set[str] = set()
        for gid in self.order:
            if self.reason.get(gid) is not Reason.SMALL_DIFFERENCE:
                continue
            people = self.by_id[gid].people
            if any(p not in sig for p in people):
                continue  # someone in it is in no released cell: it is not a combination of them
            inside = Counter(sig[p] for p in people)
            if any(sizes[region] != n for region, n in inside.items()):
                continue  # it cuts a region: not a combination of released cells
            region = min(inside, key=lambda r: (inside[r], sorted(r)))
            victims.add(self.merge_candidate(region, sizes, set(inside)))
        return any([self.suppress(victim, Reason.SMALL_DIFFERENCE) for victim in sorted(victims)])

    # rule 7 ------------------------------------------------------------------
    def history_leak(self, log: Sequence[ReleaseLogEntry]) -> _Leak | None:
        """Exact check over everything this viewer will have seen: is there a linear
        combination of logged sets and released cells whose support is fewer than k people?"""
        current = [g for g in self.order if self.released(g)]
        return _small_combination([e.people for e in log], [self.by_id[g].people for g in current], current, self.k)

    def history(self, log: Sequence[ReleaseLogEntry]) -> bool:
        if not log or not self.exact:
            return False
        leak = self.history_leak(log)
        if leak is None:
            return False
        if leak is _TOO_BIG:
            self.exact_skipped = True
            return False
        if not leak.rows:  # numerically only the earlier releases take part: nothing to fix here
            return False
        # suppress one of the shown cells taking part in the leaking combination
        victim = min(leak.rows, key=self.suppress_first_key)
        return self.suppress(victim, Reason.SMALL_DIFFERENCE)

    def run(self, log: Sequence[ReleaseLogEntry]) -> None:
        self.primary()
        self.differencing(log)
        while True:
            changed = self.complementary()
            changed = self.small_regions() or changed
            changed = self.rebuildable_differences() or changed
            if not changed:
                changed = self.history(log)
            if not changed:
                return


@dataclass(frozen=True)
class _Leak:
    rows: tuple[str, ...]  # released cells taking part in a combination that lands on small regions
    dimension: int  # dimension of the space of such combinations' images


_TOO_BIG: Any = _Leak(rows=(), dimension=-1)
EXACT_CHECK_LIMIT = 1_500_000  # matrix entries (sets x regions); above it rule 7 is skipped
_MAX_SUBSETS = 1_000_000


def _rank(matrix: Any, tol: float = 1e-9) -> int:
    """Rank with an absolute tolerance (inputs are 0/1 matrices or orthonormal bases)."""
    import numpy as np

    return 0 if matrix.size == 0 else int(np.linalg.matrix_rank(matrix, tol=tol))


def _vanishing_combinations(matrix: Any, small_mask: Any) -> tuple[Any, Any, Any]:
    """Row combinations of `matrix` that vanish on every big region (columns not in
    small_mask), their images on the small regions, and an orthonormal basis of those."""
    import numpy as np

    if matrix.shape[0] == 0:
        return np.zeros((0, 0)), np.zeros((0, int(small_mask.sum()))), np.zeros((0, int(small_mask.sum())))
    big = matrix[:, ~small_mask]
    if big.shape[1] == 0:
        combos = np.eye(matrix.shape[0])
    else:
        u, sv, _ = np.linalg.svd(big, full_matrices=True)
        combos = u[:, int((sv > 1e-9).sum()) :].T
    images = combos @ matrix[:, small_mask]
    if images.size == 0:
        return combos, images, np.zeros((0, int(small_mask.sum())))
    _, sv, vh = np.linalg.svd(images, full_matrices=False)
    return combos, images, vh[: int((sv > 1e-9).sum())]


def _small_combination(
    logged: Sequence[frozenset[str]], current: Sequence[frozenset[str]], current_ids: Sequence[str], k: int
) -> _Leak | None:
    """Whether span(logged + current indicator vectors) holds a non-zero vector touching
    fewer than k people, and which current rows take part.

    Every set is a sum of *regions* (people with the same membership in all sets), so
    every combination is constant on regions; only combinations living entirely on
    regions smaller than k can touch fewer than k people. Y spans the combinations that
    vanish outside the small regions; V = their images on the small regions; a leak is a
    non-zero vector of V whose regions hold fewer than k people in total and that the
    logged sets alone do not already produce (checked exactly, subset by subset of the
    small regions, through the eigenvalues of the projection onto V; assumed to exist
    beyond _MAX_SUBSETS subsets).
    """
    import numpy as np

    # identical sets add nothing to the span: keep one copy (a shown cell equal to a logged
    # set is nothing new; identical shown cells are represented by the first of them)
    seen_sets = set(logged)
    logged = list(dict.fromkeys(logged))
    kept = [(gid, members) for gid, members in zip(current_ids, current) if members not in seen_sets]
    kept = list({members: (gid, members) for gid, members in reversed(kept)}.values())[::-1]
    current_ids, current = [gid for gid, _ in kept], [members for _, members in kept]
    sets = [*logged, *current]
    signature: dict[str, list[int]] = defaultdict(list)
    for row, members in enumerate(sets):
        for person in members:
            signature[person].append(row)
    region_size = Counter(tuple(rows) for rows in signature.values())
    regions = list(region_size)
    small = [i for i, r in enumerate(regions) if region_size[r] < k]
    if not small:
        return None
    if len(sets) * len(regions) > EXACT_CHECK_LIMIT:
        return _TOO_BIG
    matrix = np.zeros((len(sets), len(regions)))
    for col, region in enumerate(regions):
        matrix[list(region), col] = 1.0
    small_mask = np.zeros(len(regions), dtype=bool)
    small_mask[small] = True
    combos, images, basis = _vanishing_combinations(matrix, small_mask)
    dim = basis.shape[0]
    if dim == 0:
        return None
    # what the earlier releases alone already allow is not this release's doing
    _, _, log_basis = _vanishing_combinations(matrix[: len(logged)], small_mask)
    sizes = [region_size[regions[i]] for i in small]
    touched = [j for j in range(len(small)) if np.abs(basis[:, j]).max() > 1e-9]

    # P = B^T B projects onto V; for a set Q of regions, the eigenvalues of P[Q, Q] equal to 1
    # count the independent vectors of V supported on Q (likewise for the log alone)
    proj = basis.T @ basis
    log_proj = log_basis.T @ log_basis if log_basis.shape[0] else np.zeros_like(proj)
    diag = np.diag(proj)
    leaking: Any = None  # a vector of V, not already in V_log, touching fewer than k people
    subsets_left = _MAX_SUBSETS
    for n_regions in range(1, k):
        fits = [j for j in touched if sizes[j] <= k - n_regions]
        batch = [q for q in combinations(fits, n_regions) if sum(sizes[j] for j in q) < k]
        if not batch:
            continue
        subsets_left -= len(batch)
        if subsets_left < 0:  # too many to enumerate: assume the worst
            leaking = basis.sum(axis=0)
            break
        idx = np.array(batch)
        idx = idx[diag[idx].sum(axis=1) >= 1 - 1e-9]  # a unit vector needs all its mass inside
        if idx.size == 0:
            continue
        rows_, cols_ = idx[:, :, None], idx[:, None, :]
        in_all = (np.linalg.eigvalsh(proj[rows_, cols_]) > 1 - 1e-7).sum(axis=1)
        in_log = (np.linalg.eigvalsh(log_proj[rows_, cols_]) > 1 - 1e-7).sum(axis=1)
        hits = np.nonzero(in_all > in_log)[0]
        if hits.size == 0:
            continue
        subset = list(idx[hits[0]])
        u, sv, _ = np.linalg.svd(basis[:, subset], full_matrices=False)
        vectors = u[:, sv > 1 - 1e-7].T @ basis  # the directions of V inside E_subset
        residual = vectors - (vectors @ log_basis.T) @ log_basis if log_basis.shape[0] else vectors
        leaking = vectors[int(np.argmax(np.linalg.norm(residual, axis=1)))]
        break
    if leaking is None:
        return None
    # which rows make that vector: images z = v, combination y = z @ combos
    z, *_ = np.linalg.lstsq(images.T, leaking, rcond=None)
    weight = np.abs(z @ combos)[len(logged):]
    rows = tuple(current_ids[i] for i in range(len(current_ids)) if weight[i] > 1e-9)
    return _Leak(rows=rows, dimension=dim)


def suppression_plan(
    cells: Sequence[Cell],
    k: int = DEFAULT_K,
    release_log: Sequence[ReleaseLogEntry] = (),
    *,
    overlays: Sequence[Cell] = (),
    exact_history_check: bool = True,
) -> dict[str, Reason | None]:
    """group_id -> why it is suppressed, or None when it may be shown."""
    work = _Work(cells, overlays, check_k(k))
    work.exact = exact_history_check
    work.run(list(release_log))
    if work.exact_skipped:
        logger.warning(
            "anonymity: exact check across %d earlier releases skipped (over %d matrix entries); "
            "pairwise differencing and rule 6 still applied - pass a shorter release log",
            len(release_log), EXACT_CHECK_LIMIT,
        )
    return {gid: work.reason.get(gid) for gid in work.order}


def release(
    cells: Sequence[Cell],
    k: int = DEFAULT_K,
    release_log: Sequence[ReleaseLogEntry] = (),
    *,
    overlays: Sequence[Cell] = (),
    exact_history_check: bool = True,
) -> list[ReleasedCell]:
    """Apply every anonymity rule and return what a viewer may see, in input order.

    `release_log` is what was already released to this viewer (pass the organisation-wide
    log to also guard against viewers sharing their reports). `overlays` are extra cells
    that overlap the `cells` tree, e.g. managers' reporting lines. Raises ValueError on a
    bad `k`, duplicate ids, unknown parents, a child with members its parent lacks, or a
    cycle. Record what was shown with `log_entries()`.
    """
    k = check_k(k)
    plan = suppression_plan(cells, k, release_log, overlays=overlays, exact_history_check=exact_history_check)
    out = []
    for cell in (*cells, *overlays):
        reason = plan[cell.group_id]
        shown = reason is None
        out.append(
            ReleasedCell(
                group_id=cell.group_id,
                parent_id=cell.parent_id,
                suppressed=not shown,
                reason=reason,
                k=k,
                people_count=len(cell.people) if shown else None,
                values=_frozen_values(cell.values) if shown else None,
            )
        )
    return out


def log_entries(
    cells: Sequence[Cell], released: Sequence[ReleasedCell], period: str, *, overlays: Sequence[Cell] = ()
) -> list[ReleaseLogEntry]:
    """The log entries to store for the cells of `released` that were shown."""
    by_id = {c.group_id: c for c in (*cells, *overlays)}
    return [
        ReleaseLogEntry(period=period, people=by_id[r.group_id].people, group_id=r.group_id)
        for r in released
        if not r.suppressed
    ]


# ----------------------------------------------------------------- differential privacy

Mechanism = Literal["laplace", "gaussian"]


class BudgetExhausted(ValueError):
    """Spending more epsilon (or delta) in a period than the organisation allows."""


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def gaussian_rho(epsilon: float, delta: float) -> float:
    """zCDP rho whose standard conversion gives (epsilon, delta)-DP:
    epsilon = rho + 2 * sqrt(rho * ln(1/delta))  (Bun & Steinke 2016, Prop. 1.3)."""
    log_term = math.log(1 / delta)
    return (math.sqrt(log_term + epsilon) - math.sqrt(log_term)) ** 2


def noise_scale(
    sensitivity: float, epsilon: float, mechanism: Mechanism = "laplace", delta: float = DEFAULT_DELTA
) -> float:
    """Laplace: b = sensitivity / epsilon. Gaussian: sigma = sensitivity / sqrt(2 rho)."""
    sensitivity = _check_positive("sensitivity", sensitivity)
    epsilon = _check_positive("epsilon", epsilon)
    if mechanism == "laplace":
        return sensitivity / epsilon
    if mechanism == "gaussian":
        if not 0 < delta < 1:
            raise ValueError(f"delta must be between 0 and 1, got {delta!r}")
        return sensitivity / math.sqrt(2 * gaussian_rho(epsilon, delta))
    raise ValueError(f"unknown mechanism {mechanism!r} (use 'laplace' or 'gaussian')")


def _opendp_measurement(scale: float, mechanism: Mechanism):  # noqa: ANN202
    import opendp.prelude as dp

    dp.enable_features("contrib")
    domain, metric = dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float)
    make = dp.m.make_laplace if mechanism == "laplace" else dp.m.make_gaussian
    return make(domain, metric, scale=scale)


def add_noise(
    value: float,
    sensitivity: float,
    epsilon: float,
    mechanism: Mechanism = "laplace",
    rng: Any = None,
    *,
    delta: float = DEFAULT_DELTA,
) -> float:
    """`value` plus Laplace (pure epsilon-DP) or Gaussian ((epsilon, delta)-DP) noise.

    With `rng=None` (production) the noise comes from OpenDP (`opendp` on PyPI, the
    OpenDP project at Harvard): its samplers are exact discrete samplers fed by the
    operating system's CSPRNG, so there is no seed to manage and none of the
    floating-point attacks on textbook `numpy` Laplace noise (Mironov 2012); OpenDP's
    own privacy map is checked against the requested epsilon/rho before sampling.
    Passing a `numpy.random.Generator` as `rng` draws from it instead - reproducible,
    for tests and simulations only, never for published figures.
    """
    scale = noise_scale(sensitivity, epsilon, mechanism, delta)
    value = float(value)
    if rng is not None:
        draw = rng.laplace(0.0, scale) if mechanism == "laplace" else rng.normal(0.0, scale)
        return value + float(draw)
    target = epsilon if mechanism == "laplace" else gaussian_rho(epsilon, delta)
    measurement = _opendp_measurement(scale, mechanism)
    for _ in range(8):  # OpenDP rounds its privacy map up; widen the noise by ulps until it fits
        if measurement.map(float(sensitivity)) <= target:
            return float(measurement(value))
        scale *= 1 + 1e-12
        measurement = _opendp_measurement(scale, mechanism)
    raise ValueError("could not calibrate the noise to the requested privacy loss")


def mean_sensitivity(lower: float, upper: float, n: int) -> float:
    """Sensitivity of a mean of `n` values clamped to [lower, upper] when one person's
    value changes (bounded DP: the group size is treated as known)."""
    if n <= 0:
        raise ValueError("n must be positive")
    return (upper - lower) / n


_SLACK = 1e-9


@dataclass(frozen=True)
class PrivacyBudget:
    """Epsilon (and delta) an organisation allows per period, and what was spent.

    Immutable: `charge()` returns the new budget to store, or raises BudgetExhausted.
    Composition is basic (sums), which is always valid and easy to explain to HR admins.
    """

    epsilon_per_period: float
    delta_per_period: float = 1e-5
    spent: Mapping[str, tuple[float, float]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _check_positive("epsilon_per_period", self.epsilon_per_period)
        if not 0 <= self.delta_per_period < 1:
            raise ValueError("delta_per_period must be in [0, 1)")
        object.__setattr__(self, "spent", MappingProxyType(dict(self.spent)))

    def spent_epsilon(self, period: str) -> float:
        return self.spent.get(period, (0.0, 0.0))[0]

    def spent_delta(self, period: str) -> float:
        return self.spent.get(period, (0.0, 0.0))[1]

    def remaining(self, period: str) -> float:
        return max(0.0, self.epsilon_per_period - self.spent_epsilon(period))

    def can_spend(self, period: str, epsilon: float, delta: float = 0.0) -> bool:
        return (
            self.spent_epsilon(period) + epsilon <= self.epsilon_per_period * (1 + _SLACK)
            and self.spent_delta(period) + delta <= self.delta_per_period * (1 + _SLACK)
        )

    def charge(self, period: str, epsilon: float, delta: float = 0.0) -> PrivacyBudget:
        epsilon = _check_positive("epsilon", epsilon)
        if delta < 0:
            raise ValueError("delta must not be negative")
        if not self.can_spend(period, epsilon, delta):
            raise BudgetExhausted(
                f"privacy budget for {period} exhausted: {self.remaining(period):.4g} epsilon left, "
                f"{epsilon:.4g} asked"
            )
        spent = dict(self.spent)
        spent[period] = (self.spent_epsilon(period) + epsilon, self.spent_delta(period) + delta)
        return replace(self, spent=spent)


Sensitivity = float | Callable[[int], float]


def release_cost(
    cells: Sequence[Cell],
    released: Sequence[ReleasedCell],
    epsilon_per_value: float,
    measures: int,
    *,
    overlays: Sequence[Cell] = (),
) -> float:
    """Privacy loss of noising `measures` values in every shown cell at `epsilon_per_value`:
    the worst person's sum over the shown cells that contain them (cells that do not
    contain a person do not depend on their data, so disjoint cells compose in parallel)."""
    by_id = {c.group_id: c for c in (*cells, *overlays)}
    per_person: Counter[str] = Counter()
    for shown in released:
        if not shown.suppressed:
            per_person.update(by_id[shown.group_id].people)
    worst = max(per_person.values(), default=0)
    return worst * measures * epsilon_per_value


def apply_noise(
    cells: Sequence[Cell],
    released: Sequence[ReleasedCell],
    *,
    sensitivity: Mapping[str, Sensitivity],
    epsilon_per_value: float,
    budget: PrivacyBudget,
    period: str,
    mechanism: Mechanism = "laplace",
    delta_per_value: float = DEFAULT_DELTA,
    overlays: Sequence[Cell] = (),
    rng: Any = None,
) -> tuple[list[ReleasedCell], PrivacyBudget]:
    """Noise every shown value (and `people_count`, sensitivity 1) and charge the budget.

    Every measure present in a shown cell needs a `sensitivity` (a number, or a function
    of the cell's true people count, e.g. for means) - an un-noised measure would undo the
    guarantee. Suppression is decided before noise, on true counts. Raises
    BudgetExhausted, and then nothing is noised or charged.
    """
    shown = [r for r in released if not r.suppressed]
    measures = {PEOPLE_COUNT} | {m for r in shown for m in (r.values or {})}
    missing = sorted(m for m in measures - {PEOPLE_COUNT} if m not in sensitivity)
    if missing:
        raise ValueError(f"no sensitivity given for measures: {', '.join(missing)}")
    cost = release_cost(cells, released, epsilon_per_value, len(measures), overlays=overlays)
    worst_delta = 0.0
    if mechanism == "gaussian" and cost:
        worst_delta = cost / epsilon_per_value * delta_per_value
    budget = budget.charge(period, cost, worst_delta) if cost else budget

    def noisy(value: float, sens: Sensitivity, n: int) -> float:
        s = sens(n) if callable(sens) else sens
        return add_noise(value, s, epsilon_per_value, mechanism, rng, delta=delta_per_value)

    out = []
    for r in released:
        if r.suppressed:
            out.append(r)
            continue
        n = r.people_count or 0
        values = {m: noisy(v, sensitivity[m], n) for m, v in (r.values or {}).items()}
        count = max(0, round(noisy(n, 1.0, n)))
        out.append(replace(r, people_count=count, values=_frozen_values(values)))
    return out, budget
