"""The signed binary cache: its options (`settings`, all a daemon without a cache loads),
index format and ed25519 signatures (`format`), S3 and folder stores (`stores`), one cache
over a store (`binarycache`), archives (`archive`), substitution and pushing (`substitute`),
and unpacking an archive as a confined build (`unpack`).

May import: `ixd.wire`, `ixd.model`, `ixd.store`.
"""
