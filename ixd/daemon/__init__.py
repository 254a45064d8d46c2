"""The service: the socket server (`server`), who asks and what they may do (`identity`,
`auth`), the ops (`core`), logs and pages of replies (`logstream`, `paging`), the recipe
watcher (`watch`, on `inotify`), the C heap's settings (`heap`) and the program (`main`).

May import: every other package of ixd; nothing imports it.
"""
