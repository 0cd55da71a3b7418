"""The fault suite: trials that try to break the persistence contract (a step counts once its
row is committed, and the application only advances then) on SQLite and on Postgres.

``trials.py`` holds the trials, each an async function ``trial(db, size) -> Counts``;
``runner.py`` runs them all at full size and writes ``docs/reliability.md`` (``make
reliability``); ``test_reliability.py`` runs them at small sizes in the normal suite.
"""
