"""The systems flowd is compared with: the seed's in-process approach, Redis,
SQLite, and a raw pyzmq+msgpack echo server (the floor of flowd's own stack)."""
