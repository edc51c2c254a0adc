-- The `serve` processes that run (or would run) the schedules, each renewing its row while
-- it lives: how replicas learn each other's APP_TIMEZONE (README, "Jobs, restarts and
-- replicas"). This service's own table; times by the database's UTC clock.
CREATE TABLE IF NOT EXISTS batch_service_replicas (
    id             BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name           VARCHAR(255) NOT NULL,
    app_timezone   VARCHAR(64)  NOT NULL,
    runs_schedules BOOLEAN      NOT NULL,
    joined_at      DATETIME(6)  NOT NULL,
    last_seen      DATETIME(6)  NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
