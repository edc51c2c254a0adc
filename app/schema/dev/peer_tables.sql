-- Tables owned by other CouponPop services (CONTRACTS section 1), for local work and
-- tests only: `python -m app migrate --dev-schema`. Like production: primary keys only.
CREATE TABLE IF NOT EXISTS coupon_histories (
    id              BIGINT AUTO_INCREMENT PRIMARY KEY,
    member_id       BIGINT NOT NULL,
    coupon_id       BIGINT NOT NULL,
    store_id        BIGINT NOT NULL,
    coupon_event_id BIGINT NOT NULL,
    coupon_status   ENUM('ISSUED','USED','CANCELED') NOT NULL,
    created_at      DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS coupon_events (
    id             BIGINT AUTO_INCREMENT PRIMARY KEY,
    store_id       BIGINT   NOT NULL,
    event_start_at DATETIME NOT NULL,
    event_end_at   DATETIME NOT NULL,
    total_count    INT      NOT NULL,
    issued_count   INT      NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
