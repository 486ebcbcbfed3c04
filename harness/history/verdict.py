"""Is a layer slower? Judged with the RUN as the unit, against the noise its history shows.

Why not a test on the raw samples: samples inside one run are not independent. Whole runs
shift against each other (load, frequency, thread pools, memory placement), so a
Mann-Whitney test on 100 samples a side "finds" a 6-86% change between two runs of identical
code (issue 10). Following Kalibera & Jones, the variation that matters is at the highest level
of repetition, here two levels above the sample:

    log(run median) = level of the commit + session shift (tau) + run shift (sigma)

- sigma (between runs of one session): pooled from the spread of run medians within each
  commit, on both sides and over the machine's history, shrunk toward a prior (PRIOR_SIGMA,
  PRIOR_DF pseudo degrees of freedom) so that one or two runs do not claim certainty.
- tau (between sessions: one nightly against the next): the Conbench-style lookback over the
  last LOOKBACK commits of the same machine, from the median absolute difference between
  consecutive commits' levels (robust to a past step), minus sigma's share; also shrunk
  toward a prior. A layer whose unchanged code moved +-10% between nightlies gets a wide band.

The change d = mean log run-median after - before (reported as a ratio: the ratio of the
geometric means of the run medians) has standard error

    se^2 = sigma^2 (1/runs_before + 1/runs_after) + tau^2 (1/sessions_before + 1/sessions_after)

(one session a side for two commits; `harness regressions` pools the commits of a segment)

and degrees of freedom by Welch-Satterthwaite. A change counts ("slower"/"faster") when
|ratio - 1| >= threshold, the t-test on d gives p < alpha, and the 95% bootstrap interval of
the ratio (runs resampled within each side, fixed seed) excludes 1. The noise band (reported
and drawn in the history plot) is the change that would just reach p = alpha: exp(t* se) - 1.

An interleaved A/B session (the nightly's confirmation) must also agree at the level of the
run: the run medians' one-sided Mann-Whitney test must reach RANK_ALPHA (with 3 runs a side:
every run of one side slower than every run of the other). Why: the noise above is Gaussian,
but runs are heavy-tailed - now and then one run of one layer is 50 % slow while its other
runs and its neighbours are not (measured: the one false alarm of 20 A/B confirmations,
runs 1.57 / 2.27 / 1.44 ms against 1.46 / 1.46 / 1.48). The machine prior gives that series
the sigma of every other layer, so the one wild run reads as a +15 % change at p ~ 1e-6,
while the ranks see one run of three. A real slowdown moves every run. Such a change is
reported as 'same' with `runs_disagree` set (and stays a suspect worth measuring again). The
check needs runs that are exchangeable, so it is not made where a side pools other sessions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from scipy import stats

Verdict = Literal["slower", "faster", "same"]

PRIOR_SIGMA = 0.03  # between-run sd of log run medians assumed before any data (3 %)
PRIOR_TAU = 0.03  # between-session sd assumed before any history
PRIOR_DF = 2.0  # weight of each prior, in degrees of freedom
LOOKBACK = 20  # commits of history used for the session noise
MIN_SERIES = 5  # series a machine prior is fitted from, at least
MAX_PRIOR_DF = 100.0  # a machine prior never counts for more than this many degrees of freedom
MIN_LOOKBACK = 4  # fewer commits than this: the session noise is the prior alone
BOOTSTRAP = 2000
SEED = 0
MAD_TO_SD = 1.4826  # MAD of a normal sample x this = its sd
# A MAD-based sd is worth ~37 % of the degrees of freedom of a plain one (its Gaussian
# efficiency); counting it at full weight made the 5-commit band too narrow (3 % false alarms
# at alpha 1 % in a seeded simulation with a 5 % session shift).
MAD_EFFICIENCY = 0.37
RANK_ALPHA = 0.05  # run-level rank test of an interleaved A/B session (runs_disagree)


@dataclass(frozen=True)
class Noise:
    """Between-run noise of one build x layer, on the log scale, with its evidence."""
    sigma: float  # between runs of one session
    sigma_df: float
    tau: float  # between sessions
    tau_df: float
    commits: int  # history commits the estimate used

    @classmethod
    def prior(cls) -> "Noise":
        return cls(PRIOR_SIGMA, PRIOR_DF, PRIOR_TAU, PRIOR_DF, 0)


@dataclass(frozen=True)
class RunChange:
    """One build x layer judged on run medians. Field names shared with detect.Change."""
    before_ms: float  # geometric mean of the run medians
    after_ms: float
    ratio: float  # after / before: > 1 is slower
    p_value: float
    verdict: Verdict
    ci_low: float  # 95 % bootstrap interval of the ratio
    ci_high: float
    band: float  # relative change that would just be significant (noise band half-width)
    runs_before: int
    runs_after: int
    runs_disagree: bool = False  # past threshold and alpha, but not on the ranks of the runs

    @property
    def effect(self) -> float:
        return self.ratio - 1


def run_medians(runs: Sequence[Sequence[float]]) -> np.ndarray:
    return np.array([float(np.median(r)) for r in runs if len(r)], float)


def geometric_mean(values: np.ndarray) -> float:
    return float(np.exp(np.log(values).mean()))


@dataclass(frozen=True)
class Prior:
    """What one series' noise is shrunk toward: an sd and its weight in degrees of freedom,
    for the between-run level (sigma) and the level of a commit (level_sd: tau^2 + sigma^2/k)."""
    sigma: float = PRIOR_SIGMA
    sigma_df: float = PRIOR_DF
    level_sd: float | None = None  # None: tau's own prior, PRIOR_TAU
    level_df: float = PRIOR_DF


def _shrunk(prior: float, ss: float, df: float, prior_df: float = PRIOR_DF) -> tuple[float, float]:
    """(sd, df) of a scaled-inverse-chi^2 posterior: prior sd with prior_df, data ss with df."""
    total = prior_df + df
    return math.sqrt((prior_df * prior**2 + ss) / total), total


def sigma_from_commits(groups: Sequence[np.ndarray]) -> tuple[float, float]:
    """Pooled within-commit (ss, df) of log run medians; groups: one array per commit."""
    ss = df = 0.0
    for g in groups:
        logs = np.log(g[g > 0])
        if logs.size >= 2:
            ss += float(((logs - logs.mean()) ** 2).sum())
            df += logs.size - 1
    return ss, df


def level_var_from_levels(levels: np.ndarray) -> tuple[float, float] | None:
    """(variance of one commit's level, df) from consecutive commits' log levels, or None with
    too few. Consecutive differences of unchanged code have variance 2 (tau^2 + sigma^2 / k);
    the median absolute difference ignores the odd real step in the lookback."""
    if levels.size < MIN_LOOKBACK:
        return None
    diffs = np.diff(levels)
    sd_diff = MAD_TO_SD * float(np.median(np.abs(diffs - np.median(diffs))))
    return sd_diff**2 / 2, MAD_EFFICIENCY * diffs.size


@dataclass(frozen=True)
class Evidence:
    """One series' own evidence about its noise, before any prior."""
    sigma_ss: float
    sigma_df: float
    level: tuple[float, float] | None  # (variance of a commit's level, df), see level_var_from_levels
    runs_per_commit: float
    commits: int


def noise_evidence(history: Sequence[np.ndarray], sides: Sequence[np.ndarray] = ()) -> Evidence:
    """history: one array of run medians per commit, oldest first, same machine, the sides
    excluded; sides: the two sides' own run medians."""
    ss, df = sigma_from_commits([*history, *sides])
    recent = [g for g in history if g.size and (g > 0).all()][-LOOKBACK:]
    k = float(np.mean([g.size for g in recent])) if recent else 1.0
    return Evidence(ss, df, level_var_from_levels(np.array([np.log(g).mean() for g in recent])), k, len(recent))


def noise_from(e: Evidence, prior: Prior = Prior()) -> Noise:
    sigma, sigma_df = _shrunk(prior.sigma, e.sigma_ss, e.sigma_df, prior.sigma_df)
    if e.level is None:
        return Noise(sigma, sigma_df, PRIOR_TAU, PRIOR_DF, e.commits)
    level_var, level_df = e.level
    if prior.level_sd is None:  # tau shrunk toward its own fixed prior
        tau, tau_df = _shrunk(PRIOR_TAU, max(0.0, level_var - sigma**2 / e.runs_per_commit) * level_df, level_df)
        return Noise(sigma, sigma_df, tau, tau_df, e.commits)
    level_sd, total_df = _shrunk(prior.level_sd, level_var * level_df, level_df, prior.level_df)
    return Noise(sigma, sigma_df, math.sqrt(max(0.0, level_sd**2 - sigma**2 / e.runs_per_commit)), total_df,
                 e.commits)


def estimate_noise(history: Sequence[np.ndarray], sides: Sequence[np.ndarray] = ()) -> Noise:
    """Noise of one build x layer from its history and the two sides, with the fixed priors."""
    return noise_from(noise_evidence(history, sides))


def fit_prior_variance(variances: Sequence[float], dfs: Sequence[float]) -> tuple[float, float] | None:
    """(s0^2, d0): the scaled inverse-chi^2 distribution that the series' variance estimates
    were drawn from, by the method of moments on log variances (Smyth 2004, limma's
    fitFDist). None with fewer than MIN_SERIES usable series."""
    from scipy import optimize, special  # noqa: PLC0415

    pairs = [(v, d) for v, d in zip(variances, dfs) if v > 0 and d > 0]
    if len(pairs) < MIN_SERIES:
        return None
    v, d = np.array(pairs).T
    e = np.log(v) - special.digamma(d / 2) + np.log(d / 2)
    mean = float(e.mean())
    spread = float(((e - mean) ** 2).sum() / (e.size - 1) - special.polygamma(1, d / 2).mean())
    if spread <= 0:  # the series agree beyond their own sampling noise: one common variance
        return math.exp(mean), MAX_PRIOR_DF
    d0 = 2 * optimize.brentq(lambda x: float(special.polygamma(1, x)) - spread, 1e-6, 1e6)
    d0 = min(d0, MAX_PRIOR_DF)
    return math.exp(mean + special.digamma(d0 / 2) - math.log(d0 / 2)), d0


def machine_prior(evidence: Sequence[Evidence]) -> Prior:
    """The prior that a machine's own series give each other (empirical Bayes, as limma
    moderates per-gene variances): each layer's noise is estimated from a handful of runs
    and commits, but the machine has measured dozens of layers, whose noise levels are
    alike. Shrinking each toward their common distribution, with the weight that their
    spread earns, gives every series many more degrees of freedom than its own few; with
    a Bonferroni split of alpha over the series, few degrees of freedom made the band
    two to three times wider than the noise (t quantiles at 2e-4 with 5 df against 40)."""
    sigma = fit_prior_variance([e.sigma_ss / e.sigma_df if e.sigma_df else 0.0 for e in evidence],
                               [e.sigma_df for e in evidence])
    level = fit_prior_variance([e.level[0] if e.level else 0.0 for e in evidence],
                               [e.level[1] if e.level else 0.0 for e in evidence])
    return Prior(*(math.sqrt(sigma[0]), sigma[1]) if sigma else (PRIOR_SIGMA, PRIOR_DF),
                 *(math.sqrt(level[0]), level[1]) if level else (None, PRIOR_DF))


def _welch_df(parts: Sequence[tuple[float, float]]) -> float:
    """Satterthwaite's degrees of freedom of a sum of variance components (var, df)."""
    total = sum(v for v, _ in parts)
    denom = sum(v**2 / d for v, d in parts if d > 0)
    return total**2 / denom if denom > 0 else math.inf


def bootstrap_ratio(before: np.ndarray, after: np.ndarray, seed: int = SEED) -> tuple[float, float]:
    """95 % percentile interval of exp(mean log after - mean log before), runs resampled."""
    rng = np.random.default_rng(seed)
    lb, la = np.log(before), np.log(after)
    mb = lb[rng.integers(0, lb.size, (BOOTSTRAP, lb.size))].mean(axis=1)
    ma = la[rng.integers(0, la.size, (BOOTSTRAP, la.size))].mean(axis=1)
    low, high = np.percentile(np.exp(ma - mb), [2.5, 97.5])
    return float(low), float(high)


def _t_test(before: np.ndarray, after: np.ndarray, noise: Noise, same_session: bool,
            sessions: tuple[int, int]) -> tuple[float, float, float, float]:
    """(d, se, df, two-sided p) of the change in mean log run median."""
    d = float(np.log(after).mean() - np.log(before).mean())
    parts = [(noise.sigma**2 * (1 / before.size + 1 / after.size), noise.sigma_df)]
    if not same_session:
        parts.append((noise.tau**2 * (1 / sessions[0] + 1 / sessions[1]), noise.tau_df))
    se = math.sqrt(sum(v for v, _ in parts))
    df = _welch_df(parts)
    p = float(2 * stats.t.sf(abs(d) / se, df)) if se > 0 else (0.0 if d else 1.0)
    return d, se, df, p


def runs_disagree(before: np.ndarray, after: np.ndarray, slower: bool) -> bool:
    """True if the exact one-sided Mann-Whitney test on two interleaved sides' run medians does
    not reach RANK_ALPHA in the change's direction. Never True with too few runs for the test
    to reach it at all (2 a side): the t-test then judges alone."""
    if math.comb(before.size + after.size, before.size) * RANK_ALPHA < 1:
        return False
    p = stats.mannwhitneyu(after, before, alternative="greater" if slower else "less", method="exact").pvalue
    return bool(p > RANK_ALPHA * (1 + 1e-9))  # 3 runs a side: exactly 1/20 when all are apart


def judge(before: np.ndarray, after: np.ndarray, noise: Noise, threshold: float = 0.05,
          alpha: float = 0.01, same_session: bool = False,
          sessions: tuple[int, int] = (1, 1), interleaved: bool = False) -> RunChange:
    """before/after: run medians (ms). same_session: the runs were interleaved in one session
    (two builds of one measurement), so no session shift separates the sides. sessions: how
    many sessions (commits) each side pools; their shifts average out like runs do.
    interleaved: the sides' runs alternated in one session (an A/B), so the runs must also
    agree on their ranks (runs_disagree)."""
    if before.size == 0 or after.size == 0 or (before <= 0).any() or (after <= 0).any():
        raise ValueError("judge needs at least one positive run median on each side")
    d, se, df, p = _t_test(before, after, noise, same_session, sessions)
    band = math.expm1(float(stats.t.ppf(1 - alpha / 2, df)) * se)
    low, high = bootstrap_ratio(before, after)
    ratio = math.exp(d)
    verdict: Verdict = "same"
    disagree = False
    if p < alpha and abs(ratio - 1) >= threshold and not low <= 1 <= high:
        disagree = interleaved and runs_disagree(before, after, slower=ratio > 1)
        if not disagree:
            verdict = "slower" if ratio > 1 else "faster"
    return RunChange(geometric_mean(before), geometric_mean(after),
                     ratio, p, verdict, low, high, band, int(before.size), int(after.size), disagree)
