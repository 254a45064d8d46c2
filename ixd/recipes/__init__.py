"""Recipes to plans: the overlay tree of Jinja2 templates (`tree`, `filters`, `mounts`),
rendered descriptors (`descriptor`), a package with its closures and uids (`package`), the
graph that loads and caches them (`packages`), what a template sees (`rendercontext`) and
what the render context asks of the host (`hosttools`, `hostcapture`: stage 0's captures,
`hostfiles`), and the build plan of plain nodes (`plan`). CPU work, no store writes.

May import: `ixd.wire`, `ixd.model`.
"""
