"""Running a plan: the queue and its build slots, fair between users (`scheduler`,
`fairness`), the store runner that carries out each kind of node here (`runner`: a table of
the small runners in `noderunners` and `remote`, over the builds table's `records`, the
`valid` set and the `trash`), and builds handed to a Dask cluster (`cluster`, and `worker`,
the function its workers run).

May import: `ixd.wire`, `ixd.model`, `ixd.recipes`, `ixd.store`, `ixd.cache`.
"""
