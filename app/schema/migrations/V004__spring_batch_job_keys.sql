-- JOB_KEY as Spring Batch 5.2's DefaultJobKeyGenerator computes it, for the instances this
-- service recorded under its former key (MD5 of `name=value;` over the identifying
-- parameters in name order), so that the old Spring service finds them after a roll-back.
-- Data only (no DDL). An instance whose Spring key another instance of its job already
-- holds keeps its former key: the service still finds it under that one.
UPDATE BATCH_JOB_INSTANCE i
JOIN (
    SELECT e.JOB_INSTANCE_ID,
        MD5(GROUP_CONCAT(CONCAT(p.PARAMETER_NAME, '=', p.PARAMETER_VALUE, ';')
            ORDER BY BINARY p.PARAMETER_NAME SEPARATOR '')) AS former_key,
        MD5(GROUP_CONCAT(CONCAT(p.PARAMETER_NAME, '={value=', p.PARAMETER_VALUE,
            ', type=class ', p.PARAMETER_TYPE, ', identifying=true};')
            ORDER BY BINARY p.PARAMETER_NAME SEPARATOR '')) AS spring_key
    FROM BATCH_JOB_EXECUTION_PARAMS p
    JOIN BATCH_JOB_EXECUTION e ON e.JOB_EXECUTION_ID = p.JOB_EXECUTION_ID
    WHERE p.IDENTIFYING = 'Y'
      AND e.JOB_EXECUTION_ID = (SELECT MIN(f.JOB_EXECUTION_ID) FROM BATCH_JOB_EXECUTION f
                                WHERE f.JOB_INSTANCE_ID = e.JOB_INSTANCE_ID)
    GROUP BY e.JOB_INSTANCE_ID
) k ON k.JOB_INSTANCE_ID = i.JOB_INSTANCE_ID AND i.JOB_KEY = k.former_key
LEFT JOIN BATCH_JOB_INSTANCE taken
    ON taken.JOB_NAME = i.JOB_NAME AND taken.JOB_KEY = k.spring_key
SET i.JOB_KEY = k.spring_key, i.VERSION = i.VERSION + 1
WHERE taken.JOB_INSTANCE_ID IS NULL;
