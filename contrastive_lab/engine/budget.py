"""Training to a time budget: ``time_budget_s`` and ``fit_to_budget`` (chapter 05 uses the budget,
BENCHMARKS.md the fitted schedule).

``time_budget_s`` alone is a safety net: it stops a run whose schedule (``epochs``/``max_steps``) does
not fit, mid-decay. With ``fit_to_budget=true`` the engine times the first steps after warmup and
sets the cosine schedule's length to the steps that fit the budget, then refits it as the run goes
(:class:`ScheduleFitter`), so the learning rate reaches zero when time runs out. Why fit rather than
cut: a learning rate that decays to zero exactly at the budget beats a longer schedule cut off by it
(Li, Yumer & Ramanan 2020, "Budgeted Training", ICLR, Sec. 4).
"""

from __future__ import annotations


def steps_that_fit(step: int, elapsed_s: float, seconds_per_step: float, budget_s: float,
                   margin: float = 0.03) -> int:
    """Length of a schedule that ends within a time budget, from the speed measured so far.

        T = t + floor((1 - margin) (B - e) / s)

    with t steps done in e seconds, s seconds per step (measured) and budget B; at least t + 1.
    The margin absorbs drift in the machine's speed; the time budget still stops the run if the
    estimate was too long. Why fit the schedule rather than cut it: a learning rate that decays to
    zero exactly at the budget beats a longer schedule cut off by it (Li, Yumer & Ramanan 2020,
    "Budgeted Training", ICLR, Sec. 4), and a cut-off cosine ends with the lr still high.
    """
    if not seconds_per_step > 0:
        raise ValueError(f"seconds_per_step must be > 0, got {seconds_per_step}")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    left = max(budget_s - elapsed_s, 0.0) * (1 - margin)
    return step + max(int(left // seconds_per_step), 1)


class ScheduleFitter:
    """``fit_to_budget``: keeps a cosine schedule's length fitted to a time budget as the run goes.

    The first fit times steps ``first_from .. first_at`` (the warmup, whose lr does not depend on the
    schedule's length); then every ``every`` steps the length is fitted again from the mean speed,

        s = (e_t - e_{t0}) / (t - t0),   T = min(steps_that_fit(t, e_t, s, B), cap),

    with e_t the training seconds after step t and t0 = ``first_from``, because a machine's speed
    drifts: one fit from the first 40 steps of a benchmark
    run overestimated the run's speed by ~20 % and the budget cut the cosine at 84 % of its length.
    The mean over all steps so far, not the last epoch's speed, because that speed swung between 200
    and 330 ms per step from one epoch to the next on the development machine, and the schedule with
    it. Refitting stops once the run is past ``until`` of its schedule, so the last stretch keeps one
    decay and a resumed run (which keeps the saved length and never refits) matches a straight one.
    ``elapsed_s`` must exclude pauses such as kNN evaluation.
    """

    def __init__(self, budget_s: float, cap: int, first_from: int, first_at: int, every: int,
                 until: float = 0.8, margin: float = 0.03):
        if not budget_s > 0:
            raise ValueError(f"budget_s must be > 0, got {budget_s}")
        if not 0 <= first_from < first_at:
            raise ValueError(f"need 0 <= first_from < first_at, got {first_from}, {first_at}")
        if every < 1 or not 0 < until <= 1:
            raise ValueError(f"every must be >= 1 step and until in (0, 1], got every={every}, until={until}")
        self.budget_s, self.cap, self.every, self.until, self.margin = budget_s, cap, every, until, margin
        self.fit_from, self.fit_at, self.t_from = first_from, first_at, 0.0
        self.seconds_per_step = float("nan")  # the last fit's mean, for the log

    def update(self, step: int, elapsed_s: float, agree=None) -> int | None:
        """After step ``step``: the new schedule length when this step refits, else None.

        ``agree`` combines the ranks' proposals (the engine passes the minimum over ranks)."""
        if step == self.fit_from:
            self.t_from = elapsed_s
        if step != self.fit_at:
            return None
        per_step = (elapsed_s - self.t_from) / (step - self.fit_from)
        total = min(steps_that_fit(step, elapsed_s, per_step, self.budget_s, self.margin), self.cap)
        total = agree(total) if agree is not None else total
        self.seconds_per_step = per_step
        nxt = step + self.every
        self.fit_at = nxt if nxt < self.until * total else -1
        return total
