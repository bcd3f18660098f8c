"""Drift statistics for driftloop: calibrated, explained verdicts on two windows of traffic.

numpy only at import; scikit-learn (k-means) is imported on first use.

- ``embedding_drift`` — prompts/responses embeddings: mean-shift test + cluster PSI/JS
- ``length_drift`` — token counts: KS (or PSI/JS over deciles)
- ``rate_drift`` — refusal / empty / truncated rates
- ``histogram_drift`` — any registered statistic over two count histograms
- ``distinct_n`` — vocabulary diversity of one window

Every calibrated test takes ``sessions`` (``sessions.session_codes``) and then permutes whole
conversations; ``decision`` folds many signals into one (Cauchy combination, Holm); ``tails``
gives p-values past the permutation floor; ``power`` the minimum detectable shift.
"""

from monitor.drift.calibration import Calibrated, calibrate_histogram, permutation_tables
from monitor.drift.clusters import ClusterHistogram, choose_k, cluster_histogram
from monitor.drift.decision import cauchy_combination, holm
from monitor.drift.mean_shift import mean_shift_test
from monitor.drift.power import min_detectable_shift
from monitor.drift.sessions import SessionCounts, design_effect, session_codes
from monitor.drift.signals import (
    EMBEDDING_POLICY,
    LENGTH_POLICY,
    RATE_POLICY,
    DriftPolicy,
    DriftResult,
    EmbeddingDrift,
    embedding_drift,
    histogram_drift,
    length_drift,
    not_evaluated,
    rate_drift,
)
from monitor.drift.statistics import (
    STATISTICS,
    BinScores,
    distinct_n,
    get_statistic,
    ks_statistic,
    register_statistic,
)

__all__ = [
    "EMBEDDING_POLICY",
    "LENGTH_POLICY",
    "RATE_POLICY",
    "STATISTICS",
    "BinScores",
    "Calibrated",
    "ClusterHistogram",
    "DriftPolicy",
    "DriftResult",
    "EmbeddingDrift",
    "SessionCounts",
    "calibrate_histogram",
    "cauchy_combination",
    "choose_k",
    "cluster_histogram",
    "design_effect",
    "distinct_n",
    "embedding_drift",
    "get_statistic",
    "histogram_drift",
    "holm",
    "ks_statistic",
    "length_drift",
    "mean_shift_test",
    "min_detectable_shift",
    "not_evaluated",
    "permutation_tables",
    "rate_drift",
    "register_statistic",
    "session_codes",
]
