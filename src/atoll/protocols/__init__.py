"""Sans-IO two-party protocols: messages in, messages out.

Why: a protocol core that never touches sockets, files, clocks or the global
RNG can be driven by any transport (in-memory pair, HTTPS, a test harness
that tampers with messages) and tested exhaustively; see
``docs/architecture.md`` and h11's design. :mod:`atoll.protocols._machine`
holds the base class, :mod:`atoll.protocols.messages` the versioned codec.
"""
