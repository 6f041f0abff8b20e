"""The control plane: jobs, contracts, audit chain, metering and billing.

Why: who may run what, what was run, and what it cost are *metadata* that
every party needs to see and verify, while the rows stay in the data plane.
Modules here hold and check that metadata -- never row-level data.
"""
