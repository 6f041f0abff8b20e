"""Transports: drive sans-IO protocol machines over memory or HTTPS.

Why: protocol cores never do I/O; a transport moves their encoded messages.
:mod:`atoll.transport.memory` pairs two machines in one process (tests, the
single-process CLI); the HTTPS transport connects two ``atoll`` processes.
"""
