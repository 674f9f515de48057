"""I/O maps: YAML register maps shipped with the runtime (data; schema in runtime.io)."""
