"""The label store: tasks of a prompt and its responses that people order, in SQLite or PostgreSQL.

Shared by every worker and replica (the review buffer's groups and `rmserve label add` go to the same
database); no Flask here: the page lives in `rmserve.protocols.label_page`.
"""
