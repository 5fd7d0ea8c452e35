"""MeZO-GV and MeZO-Greedy (Jin, Cen and Tan, arXiv 2601.04710) as hizfo-bench methods.

The estimators live in hizfo.zo (GuidedSPSA), so Hi-ZFO's ZO part can use them too
(`zo_estimator: gv | greedy`); this package only makes them bench methods.
"""

from hizfo_bench_mezo_gv.method import MeZOGreedy, MeZOGreedyConfig, MeZOGV, MeZOGVConfig

__all__ = ["MeZOGV", "MeZOGVConfig", "MeZOGreedy", "MeZOGreedyConfig"]
