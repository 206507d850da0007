"""The time-based leave-last-out holdout: which ratings each model sees and is scored on.

Ratings are ordered per user by (rated_at, movie_id). For each user with at least two
positives, the last positive is the test item and the second-to-last the validation
item. Every rating gets a part code:

    TRAIN   before the validation item (any rating; positives are the train positives)
    VAL     the validation item
    BETWEEN after the validation item, before the test item (never a positive)
    TEST    the test item
    AFTER   after the test item (never a positive)

Users with fewer than two positives are all TRAIN: they are not evaluated, but the
published model still recommends to them.

One fit a night (NightPlan): the night's evaluation users (a seeded sample of the test users,
at most eval_users) have their test item and everything after it left out of the night's one
fit; every night a small seeded draw of cold-start users (1%) is left out entirely. Every other
rating goes in. The published model is the same fit with the held-out users' ALS factors
re-solved from their whole history (train's fold-in), so the gate measures the model that is
published and no evaluated item is in the fit that scores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import StateError
from ..method import model
from ..settings import Settings

TRAIN, VAL, BETWEEN, TEST, AFTER = range(5)


def assign_parts(user_id: np.ndarray, rated_at: np.ndarray, movie_id: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Part code per rating (any input order); ties in time are broken by movie_id."""
    order = np.lexsort((movie_id, rated_at, user_id))
    users, pos = user_id[order], positive[order].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    # positives at or after each row, within the user
    rev_cum = np.cumsum(pos[::-1])[::-1]
    group_end_cum = np.r_[rev_cum[ends[:-1]], 0] if len(ends) > 1 else np.array([0])
    group = np.repeat(np.arange(len(starts)), ends - starts)
    after = rev_cum - group_end_cum[group]
    n_pos = after[starts][group]
    evaluated = n_pos >= 2
    parts = np.full(len(users), TRAIN, dtype=np.int8)
    is_test = evaluated & (pos == 1) & (after == 1)
    is_val = evaluated & (pos == 1) & (after == 2)
    parts[evaluated & (after == 0)] = AFTER
    parts[evaluated & (pos == 0) & (after == 1)] = BETWEEN
    parts[is_test] = TEST
    parts[is_val] = VAL
    out = np.empty_like(parts)
    out[order] = parts
    return out


def users_now(ratings: dict, keep: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
    """Per user row, the time of their newest rating where `keep` is true: when a nightly run
    could first have answered for their held-out item (the newest of all where a user has none)."""
    times = ratings["rated_at"][keep]
    now = np.full(len(user_ids), np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(now, model.index(ratings["user_id"][keep], user_ids), times)
    return np.where(now == np.iinfo(np.int64).min, times.max() if len(times) else 0, now)


def user_keys(user_ids: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random key per user id (splitmix64): the same for a user every night."""
    with np.errstate(over="ignore"):
        z = np.asarray(user_ids).astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def users_evaluated(test_user_ids: np.ndarray, settings: Settings) -> np.ndarray:
    """Which test users are evaluated (sorted ids): all, or the eval_users of them with the
    smallest seeded keys when there are more. Keyed by user, the sample stays the same from
    night to night, so a night warm-started from the last one's fit starts from a fit that held
    out the same users; the bootstrap intervals include the sampling error."""
    test_user_ids = np.asarray(test_user_ids)
    if settings.eval_users == 0 or len(test_user_ids) <= settings.eval_users:
        return np.sort(test_user_ids)
    chosen = np.argsort(user_keys(test_user_ids, settings.random_seed), kind="stable")[: settings.eval_users]
    return np.sort(test_user_ids[chosen])


# ---- the cold-start draw: users taken out as if they were new ------------------------------

COLD_START_SEEDS = (1, 3, 5, 10)  # liked movies a simulated new user gives
COLD_START_LATER_POSITIVES = 5  # and at least this many positives after them to score on
COLD_START_SHARE = 0.2  # a full night's draw: this share of the eligible users
USUAL_NIGHT_COLD_START_SHARE = 0.01  # a usual night's draw: at most this share of all users


def eligible_users(
    user_id: np.ndarray,
    positive: np.ndarray,
    min_positives: int = max(COLD_START_SEEDS) + COLD_START_LATER_POSITIVES,
) -> np.ndarray:
    """The users with at least `min_positives` positives (sorted): those a cold-start draw takes from."""
    users, counts = np.unique(user_id[positive], return_counts=True)
    return users[counts >= min_positives]


def held_out_users(
    user_id: np.ndarray,
    positive: np.ndarray,
    seed: int,
    min_positives: int = max(COLD_START_SEEDS) + COLD_START_LATER_POSITIVES,
    share: float = COLD_START_SHARE,
    limit: int = 0,
) -> np.ndarray:
    """A seeded random `share` of the users with at least `min_positives` positives, at most
    `limit` of them (0: no cap); sorted."""
    eligible = eligible_users(user_id, positive, min_positives)
    if len(eligible) < 2:
        return eligible[:0]
    size = max(1, int(round(share * len(eligible))))
    size = min(size, limit) if limit else size
    return np.sort(np.random.default_rng(seed).choice(eligible, size=size, replace=False))


def usual_night_cold_start_users(user_id: np.ndarray, positive: np.ndarray, settings: Settings) -> np.ndarray:
    """A usual night's cold-start draw, left out of its one fit: the full night's draw capped at
    1% of the users (and at cold_start_eval_users), so the fit loses almost nothing."""
    n_users = len(np.unique(user_id))
    cap = max(1, int(USUAL_NIGHT_COLD_START_SHARE * n_users))
    cap = min(cap, settings.cold_start_eval_users) if settings.cold_start_eval_users else cap
    return held_out_users(user_id, positive, settings.random_seed, limit=cap)


# ---- the night's plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class NightPlan:
    """Who is held out of the night's one fit, and whether the night is a full one."""

    full: bool  # a full night: the reference recipe and the cold-start protocol's own fit too
    reason: str  # why the night is (not) full
    eval_user_ids: np.ndarray  # evaluated users: their test item and later ratings are out of the fit
    cold_start_user_ids: np.ndarray  # simulated new users (1%), out of the fit entirely
    # each evaluated user's test item (movie id, rated_at), aligned with eval_user_ids; empty in
    # plans saved before they were kept
    eval_test_movie_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    eval_test_rated_at: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def folded_user_ids(self) -> np.ndarray:
        """The users whose published ALS factors are re-solved from their whole history."""
        return np.union1d(self.eval_user_ids, self.cold_start_user_ids)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "full": np.array(self.full),
            "reason": np.array(self.reason),
            "eval_user_ids": np.asarray(self.eval_user_ids, np.int64),
            "cold_start_user_ids": np.asarray(self.cold_start_user_ids, np.int64),
            "eval_test_movie_ids": np.asarray(self.eval_test_movie_ids, np.int64),
            "eval_test_rated_at": np.asarray(self.eval_test_rated_at, np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict) -> NightPlan:
        if "eval_user_ids" not in arrays:
            raise StateError("the run was split before nights were planned; run `recjobs split` for it again")
        return cls(
            bool(arrays["full"]),
            str(arrays["reason"]),
            np.asarray(arrays["eval_user_ids"], np.int64),
            np.asarray(arrays["cold_start_user_ids"], np.int64),
            np.asarray(arrays.get("eval_test_movie_ids", np.empty(0)), np.int64),
            np.asarray(arrays.get("eval_test_rated_at", np.empty(0)), np.int64),
        )

    def same_test_item(self, earlier: NightPlan) -> np.ndarray:
        """Which of this night's evaluated users (a mask over eval_user_ids) an earlier night
        evaluated on the same test item: that night's fit held out this night's test item too."""
        if len(earlier.eval_test_movie_ids) != len(earlier.eval_user_ids):  # a plan saved before test items were kept
            return np.zeros(len(self.eval_user_ids), bool)
        at = model.id_rows(self.eval_user_ids, earlier.eval_user_ids)
        found = at >= 0
        same = np.zeros(len(self.eval_user_ids), bool)
        same[found] = (earlier.eval_test_movie_ids[at[found]] == self.eval_test_movie_ids[found]) & (
            earlier.eval_test_rated_at[at[found]] == self.eval_test_rated_at[found]
        )
        return same


def plan_night(ratings: dict, parts: np.ndarray, full: bool, reason: str, settings: Settings) -> NightPlan:
    """The night's evaluation users (a seeded sample of the test users, without the cold-start
    draw) and its cold-start draw. Full nights hold out the same 1% draw as usual nights (their
    cold-start protocol has a fit of its own), so every night's one fit sees the same users and a
    rerun on unchanged data moves no list for a change of plan."""
    positive = ratings["rating"] >= settings.positive_threshold
    cold = usual_night_cold_start_users(ratings["user_id"], positive, settings)
    test_rows = np.flatnonzero(parts == TEST)  # one per evaluated user
    test_users = ratings["user_id"][test_rows]
    evaluated = users_evaluated(test_users[~np.isin(test_users, cold)], settings)
    rows = test_rows[np.isin(test_users, evaluated)]
    rows = rows[np.argsort(ratings["user_id"][rows], kind="stable")]
    return NightPlan(
        full,
        reason,
        evaluated,
        cold,
        ratings["movie_id"][rows].astype(np.int64),
        ratings["rated_at"][rows].astype(np.int64),
    )


def one_fit_keep(ratings: dict, parts: np.ndarray, plan: NightPlan) -> np.ndarray:
    """The ratings the night's one fit sees: all but the evaluated users' test item and later
    ratings, and all but the cold-start draw's ratings."""
    user = ratings["user_id"]
    return ~(np.isin(user, plan.eval_user_ids) & (parts >= TEST)) & ~np.isin(user, plan.cold_start_user_ids)


def one_fit_evaluation_data(
    ratings: dict, keep: np.ndarray, plan: NightPlan, user_ids, movie_ids, settings: Settings
) -> model.Interactions:
    """The one fit's interactions (`keep`: one_fit_keep) as the evaluation scores them, the
    evaluated users' rows only: each one's trending part counted back from their own newest
    rating in the fit (before their test item), from every rating in the fit."""
    now = users_now(ratings, keep, user_ids)
    return model.interactions(ratings, keep, user_ids, movie_ids, settings, now=now, only_users=plan.eval_user_ids)
