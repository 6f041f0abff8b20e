"""Analytics: persona/TGI, match rate, measurement and attribution, IVT, LBS.

Why: these are the computations brands pay for (seed §3–5, 11). Each runs the
same on a party's own data, on a PSI result and inside the island, as a map
over identity buckets with additive partials merged (ARCHITECTURE idea 2),
and every released table passes through the output guard
(:mod:`atoll.privacy`). Import the modules directly — this package file stays
empty so that importing one analytic never loads the others::

    from atoll.analytics.persona import persona          # TGI reports
    from atoll.analytics.match_rate import match_rate    # 撞库 validation
"""
