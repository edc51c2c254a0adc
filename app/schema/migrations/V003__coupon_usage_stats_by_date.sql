-- Replacing one date's rows for a chunk of members, and reading the last days back,
-- both look rows up by date then member. Production may lack this index: the jobs
-- stay correct without it, only slower. (Error 1061, already there, is tolerated.)
ALTER TABLE coupon_usage_stats ADD INDEX idx_coupon_usage_stats_date_member (aggregated_at, member_id);
