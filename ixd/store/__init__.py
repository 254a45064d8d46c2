"""The store on this machine: its database (`db`), source fetches (`fetch`), one confined
build (`builder` over its `scratch`, its supervised `process` and its `buildlog`; `confine`,
`buildusers`), canonicalisation and hashing of what a build
made (`canonical`, `elf`, `treehash`), realm assembly (`assemble`), garbage collection,
crash recovery and verification (`gc`, `recovery`, `verify`), and file-system helpers
(`fstree`, `safeio`).

May import: `ixd.wire`, `ixd.model`.
"""
