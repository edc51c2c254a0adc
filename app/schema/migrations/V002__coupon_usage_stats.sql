-- The table this service writes and its fan-out job reads back (CONTRACTS section 1).
CREATE TABLE IF NOT EXISTS coupon_usage_stats (
    id            BIGINT AUTO_INCREMENT PRIMARY KEY,
    member_id     BIGINT       NOT NULL,
    top_dong      VARCHAR(255) NOT NULL,
    top_hour      TINYINT      NOT NULL,
    aggregated_at DATE         NOT NULL,
    created_at    DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
