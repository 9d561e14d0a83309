"""What a generated sentence is made of: the Observation record, its verdicts and scopes, and the number formatting.

Every rule (stress.report.observations, stress.report.robustness_observations, the sweep
report's) is a function summary -> list[Observation]; a rule whose section is missing from
the summary (its stage did not run) returns an empty list. Nothing is written by hand as a
result: each number in a sentence is a formatted field of the summary.

Two kinds of statement are kept apart (`scope`):
- "model": about these trained models ("this model is wrong on these images", "its ECE is
  0.19"). Intervals over the test images are the right uncertainty for them.
- "intervention": about the augmentation's effect ("augmentation makes the network more
  robust to fog"). That needs the variation between trainings, i.e. seeds. A single run
  holds one trained pair, so these rules never give an "effect" verdict there: they say what
  this pair shows, that training-to-training variation was not measured, and which sweep
  command measures it (verdict "one pair only"). The sweep report gives intervention
  verdicts from seed-level intervals.

Verdicts:
- "effect": an interval excludes 0 in the direction the rule asks about, or a count is > 0
  (or, for a check, the check passes with its interval on the right side of the threshold);
- "no effect": the data show the opposite (a zero count, an interval on the other side,
  a failed check);
- "inconclusive": the interval includes 0, or no interval exists;
- "one pair only": an intervention statement from a single trained pair, not tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

EFFECT, NO_EFFECT, INCONCLUSIVE = "effect", "no effect", "inconclusive"


ONE_PAIR = "one pair only"  # an intervention statement from one trained pair: not a verdict on the augmentation


MODEL, INTERVENTION = "model", "intervention"  # Observation.scope


SANITY_THRESHOLD = 0.5  # mean rank correlation with a randomised model below this: maps depend on the weights


TRAINED_FOR = ("translation", "flip")  # what RandomCrop + RandomHorizontalFlip shows the model (edge-filled shifts)


NOT_TRAINED_FOR = ("rotation", "scale")


@dataclass(frozen=True)
class Observation:
    """One generated finding: `text` states it, `evidence` holds the numbers it quotes."""

    rule: str
    text: str
    verdict: str  # EFFECT | NO_EFFECT | INCONCLUSIVE
    uncertainty: str
    figure: str | None = None  # path relative to the run folder, e.g. figures/gain_heatmap.png
    evidence: dict[str, float | int | None] = field(default_factory=dict)
    scope: str = MODEL  # MODEL: about these trained models; INTERVENTION: about the augmentation's effect


Rule = Callable[[dict], list[Observation]]


# -- formatting and interval logic ------------------------------------------------
def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def number(value: float | None, digits: int = 3) -> str:
    """A value as the report prints it (fixed decimals; "n/a" for missing or not finite)."""
    return "n/a" if _missing(value) else f"{value:.{digits}f}"


def words(name: str) -> str:
    """A corruption's, shift's or characteristic's key as the text prints it: impulse_noise -> impulse noise."""
    return name.replace("_", " ")


def p_text(value: float | None) -> str:
    """A p-value: three decimals down to 0.001, below that in scientific notation (never a bare "0.000")."""
    if _missing(value):
        return "n/a"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}" if value > 0 else "< 1e-300"  # 0.0: the float underflowed


def signed(value: float | None, digits: int = 3) -> str:
    return "n/a" if _missing(value) else f"{value:+.{digits}f}"


def interval_text(low: float | None, high: float | None, digits: int = 3, sign: bool = True) -> str:
    form = signed if sign else number
    return "no interval" if low is None or high is None else f"[{form(low, digits)}, {form(high, digits)}]"


def paired_method(differences, one: bool = False) -> str:
    """How the 95% intervals of paired differences were computed, in words: each difference's "method" ("newcombe_paired" for
    0/1 outcomes, "t"; a record written before methods were recorded holds t-intervals)."""
    methods = {d.get("method", "t") for d in differences}
    s = "" if one else "s"
    if methods == {"newcombe_paired"}:
        return f"Newcombe's paired 95% interval{s} for 0/1 outcomes"
    if methods == {"t"}:
        return f"paired 95% t-interval{s}"
    return f"paired 95% interval{s} (Newcombe's for 0/1 outcomes, else t)"


def percent_interval(entry: dict | None) -> str:
    """A {"mean", "low", "high"} share in percent with its interval: "95% [94%, 96%]", "95% (no interval)", or "n/a"."""
    if not entry or _missing(entry["mean"]):
        return "n/a"
    return f"{entry['mean']:.0%}" + (" (no interval)" if entry["low"] is None or entry["high"] is None
                                     else f" [{entry['low']:.0%}, {entry['high']:.0%}]")


def verdict_of(low: float | None, high: float | None) -> str:
    """EFFECT when the interval excludes 0, else INCONCLUSIVE (also without an interval)."""
    if low is None or high is None:
        return INCONCLUSIVE
    return EFFECT if low > 0 or high < 0 else INCONCLUSIVE


def below_zero_verdict(low: float | None, high: float | None) -> str:
    """For a rule asking whether a difference is negative: EFFECT when the interval lies below 0, NO_EFFECT when it lies
    above 0 (the data show the opposite), else INCONCLUSIVE."""
    if low is None or high is None:
        return INCONCLUSIVE
    return EFFECT if high < 0 else NO_EFFECT if low > 0 else INCONCLUSIVE


def direction(low: float | None, high: float | None, up: str, down: str) -> str:
    """Words for an interval: `up` above 0, `down` below 0, else that it is inconclusive."""
    if verdict_of(low, high) == INCONCLUSIVE:
        return "the 95% interval includes 0, so the direction is inconclusive."
    return up if low > 0 else down


def sweep_command(summary: dict) -> str:
    """The command that measures training-to-training variation for this run's data."""
    source = summary.get("dataset", {}).get("source") or "SOURCE"
    return f"python jobs/seed_sweep.py --data {source} --num-seeds 5"


def models_of(summary: dict) -> tuple[str, ...]:
    """The models under test in a run's summary, the reference first (the trained variants, or --evaluate's names)."""
    from stress.constants import VARIANTS

    return tuple(summary.get("variants") or ()) or VARIANTS


def given_models(summary: dict) -> bool:
    """Whether the models were given with --evaluate (not trained by this run from one recipe with and without augmentation)."""
    return any(isinstance(e, dict) and "checkpoint" in e for e in (summary.get("variants") or {}).values())


def one_pair(summary: dict, finding: str) -> str:
    """`finding` (what this pair of models shows) plus the sentence that scopes it."""
    return (f"{finding} One trained pair: the variation between trainings (initialisation, data order, augmentation "
            f"draws) was not measured, so this is not evidence about the augmentation itself; `{sweep_command(summary)}` "
            "measures that.")


def pair_difference(mean: float | None, low: float | None, high: float | None) -> str:
    """How an image-level interval of a difference between the two models reads: about these models only."""
    if verdict_of(low, high) == INCONCLUSIVE:
        return "on these test images the two models are not distinguishable"
    return f"these two models differ ({'augmented higher' if low > 0 else 'augmented lower'})"
