"""The job repository: the Spring Batch 5 metadata tables, by concern.

- `rules`: the launch, status and commit rules, as pure functions (the operator's too);
- `tables`: the table access, one statement or a few per function;
- `explorer`: the read side (executions, the automatic launches' and the metrics' reads);
- `mariadb`: the repository in MariaDB, the rules around the table access;
- `memory`: the repository in memory, under the same rules (tests);
- `clock`: the database clock every BATCH_* time is written and compared on.
"""
