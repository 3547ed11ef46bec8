-- Queries a monitoring user writes, run on PostgreSQL and on promflow over the same samples.
-- Tables: cpu and mem (instance, job), http_requests_total (code, handler, method),
-- http_request_duration_seconds_bucket (handler, le); each with ts and value.
-- A line "-- differs: why" marks the query after it as one promflow answers otherwise or
-- refuses, for the reason given; the test fails when a marked query agrees, or an unmarked
-- one does not.

-- aggregates and grouping
SELECT count(*) FROM cpu
SELECT count(*) FROM CPU
SELECT count(*) FROM "cpu"
SELECT job, count(*), min(value), max(value), sum(value), avg(value) FROM cpu GROUP BY job ORDER BY job
SELECT job, instance, count(*) FROM cpu GROUP BY job, instance ORDER BY job, instance
SELECT job, max(value) - min(value) AS spread FROM cpu GROUP BY job HAVING count(*) > 5 ORDER BY spread DESC
SELECT count(instance), count(*) FROM cpu
SELECT sum(value) FROM cpu WHERE job = 'nothing'
SELECT count(*) FROM cpu WHERE job = 'nothing'
SELECT avg(value), stddev(value), variance(value) FROM mem
SELECT job, stddev_samp(value), stddev_pop(value), var_pop(value) FROM cpu GROUP BY job ORDER BY job
SELECT job, percentile_cont(0.5) WITHIN GROUP (ORDER BY value) FROM cpu GROUP BY job ORDER BY job
SELECT job, percentile_cont(0.9) WITHIN GROUP (ORDER BY value) AS p90 FROM mem GROUP BY job ORDER BY job
SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY value) FROM cpu
SELECT job, string_agg(DISTINCT instance, ',' ORDER BY instance) FROM cpu GROUP BY job ORDER BY job
SELECT job, bool_and(value > 1), bool_or(value > 20) FROM cpu GROUP BY job ORDER BY job
SELECT job, array_agg(DISTINCT instance) FROM mem GROUP BY job ORDER BY job
SELECT handler, sum(value) FROM http_requests_total WHERE ts = (SELECT max(ts) FROM http_requests_total) GROUP BY handler ORDER BY handler
SELECT code, count(DISTINCT handler) FROM http_requests_total GROUP BY code ORDER BY code
SELECT job, count(*) AS n FROM cpu GROUP BY job ORDER BY n DESC, job
SELECT job, avg(value) FROM cpu GROUP BY job HAVING avg(value) > 5 ORDER BY 2
SELECT instance, count(*) FROM cpu GROUP BY instance ORDER BY instance NULLS FIRST
SELECT instance, count(*) FROM cpu GROUP BY instance ORDER BY instance
SELECT instance, count(*) FROM cpu GROUP BY instance ORDER BY instance DESC
SELECT job, min(value), max(value) FROM cpu GROUP BY ROLLUP (job) ORDER BY job
SELECT max(value) FROM cpu
SELECT min(value) AS lowest, max(value) AS highest, max(value) - min(value) AS spread FROM mem
SELECT sum(value) / count(*) FROM cpu
SELECT count(*) / 3 FROM cpu
SELECT count(*)::float8 / 3 FROM cpu
SELECT job, sum(value) * 100 / (SELECT sum(value) FROM mem) AS pct FROM mem GROUP BY job ORDER BY job

-- filters on any column
SELECT job, instance, value FROM cpu WHERE value > 10 ORDER BY job, instance, ts
SELECT job, value FROM cpu WHERE value BETWEEN 4 AND 6 ORDER BY job, ts
SELECT job, instance, value FROM cpu WHERE job = 'api' OR instance IS NULL ORDER BY job, instance, ts
SELECT count(*) FROM cpu WHERE NOT (job = 'api') AND value >= 5
SELECT job, value FROM cpu WHERE job LIKE 'ba%' ORDER BY ts
SELECT DISTINCT job FROM cpu WHERE job ~ '^(api|db)$' ORDER BY job
SELECT DISTINCT job FROM cpu WHERE job ~ 'p' ORDER BY job
SELECT job, instance FROM cpu WHERE instance IN ('b', 'c') GROUP BY job, instance ORDER BY job
SELECT count(*) FROM cpu WHERE instance IS NOT NULL
SELECT count(*) FROM cpu WHERE instance <> 'a'
SELECT count(*) FROM cpu WHERE instance != 'a'
SELECT count(*) FROM cpu WHERE job NOT IN ('api', 'db')
SELECT count(*) FROM cpu WHERE job NOT LIKE 'a%'
SELECT count(*) FROM cpu WHERE job ILIKE 'API'
SELECT count(*) FROM cpu WHERE job !~ '^a'
SELECT count(*) FROM cpu WHERE job ~* '^A'
SELECT count(*) FROM cpu WHERE value > 5 AND value < 10 AND job = 'api'
SELECT count(*) FROM cpu WHERE (job = 'api' AND instance = 'a') OR (job = 'db' AND value > 5)
SELECT count(*) FROM cpu WHERE value NOT BETWEEN 2 AND 12
SELECT count(*) FROM http_requests_total WHERE code LIKE '5%'
SELECT handler, method, max(value) FROM http_requests_total WHERE code = '200' GROUP BY handler, method ORDER BY handler
SELECT count(*) FROM cpu WHERE job IN (SELECT job FROM mem WHERE value > 150)
SELECT count(*) FROM cpu WHERE value = 5
SELECT count(*) FROM cpu WHERE value = 5.0
SELECT count(*) FROM cpu WHERE value > '5'
SELECT count(*) FROM http_requests_total WHERE code::int >= 500
SELECT count(*) FROM cpu WHERE instance = ''
SELECT count(*) FROM cpu WHERE job = 'API'
SELECT count(*) FROM cpu WHERE lower(job) = 'api'
SELECT count(*) FROM cpu WHERE job IS DISTINCT FROM 'api'
SELECT count(*) FROM cpu WHERE instance IS DISTINCT FROM NULL

-- DISTINCT
SELECT DISTINCT job FROM cpu ORDER BY job
SELECT count(DISTINCT job), count(DISTINCT instance) FROM cpu
SELECT DISTINCT job, instance FROM cpu ORDER BY job, instance
SELECT DISTINCT ON (job) job, ts, value FROM cpu ORDER BY job, ts DESC
SELECT DISTINCT ON (job, instance) job, instance, value FROM cpu ORDER BY job, instance, ts DESC
SELECT DISTINCT handler, code FROM http_requests_total ORDER BY 1, 2
SELECT DISTINCT le FROM http_request_duration_seconds_bucket ORDER BY le
SELECT count(*) FROM (SELECT DISTINCT job, instance FROM cpu) s

-- CASE, COALESCE, casts, strings
SELECT job, CASE WHEN value > 10 THEN 'high' ELSE 'low' END AS level, count(*) FROM cpu GROUP BY 1, 2 ORDER BY 1, 2
SELECT COALESCE(instance, 'none') AS i, max(value) FROM cpu GROUP BY 1 ORDER BY 1
SELECT upper(job), length(job) FROM cpu GROUP BY job ORDER BY 1
SELECT job || '/' || COALESCE(instance, '-') AS k FROM cpu GROUP BY 1 ORDER BY 1
SELECT replace(job, 'a', 'A'), lower(upper(job)) FROM cpu GROUP BY job ORDER BY 1
SELECT CASE job WHEN 'api' THEN 1 WHEN 'db' THEN 2 ELSE 0 END AS k, count(*) FROM cpu GROUP BY 1 ORDER BY 1
SELECT NULLIF(instance, 'a') AS i, count(*) FROM cpu GROUP BY 1 ORDER BY 1
SELECT greatest(1, 2, 3), least(4, 5, 6)
SELECT job, greatest(max(value), 10), least(min(value), 3) FROM cpu GROUP BY job ORDER BY job
SELECT substring(job from 1 for 2) AS p, count(*) FROM cpu GROUP BY 1 ORDER BY 1
SELECT substr(handler, 2) AS h FROM http_requests_total GROUP BY 1 ORDER BY 1
SELECT left(job, 1), right(job, 1) FROM cpu GROUP BY job ORDER BY job
SELECT concat(job, ':', instance) AS k FROM cpu GROUP BY job, instance ORDER BY 1
SELECT concat_ws('/', job, instance) AS k FROM cpu GROUP BY job, instance ORDER BY 1
SELECT split_part(handler, '/', 2) AS h FROM http_requests_total GROUP BY 1 ORDER BY 1
SELECT regexp_replace(handler, '^/', '') AS h FROM http_requests_total GROUP BY 1 ORDER BY 1
SELECT trim(' x '), ltrim('  y'), rtrim('z  '), btrim('xxaxx', 'x')
SELECT lpad(job, 6, '*'), rpad(job, 6, '.') FROM cpu GROUP BY job ORDER BY job
SELECT position('b' in job) FROM cpu GROUP BY job ORDER BY job
SELECT strpos(job, 'a') FROM cpu GROUP BY job ORDER BY job
SELECT initcap(job), reverse(job), repeat(job, 2) FROM cpu GROUP BY job ORDER BY job
SELECT md5(job) FROM cpu GROUP BY job ORDER BY job
SELECT starts_with(job, 'a') FROM cpu GROUP BY job ORDER BY job
SELECT char_length(job), octet_length(job) FROM cpu GROUP BY job ORDER BY job
SELECT job, value::int FROM cpu WHERE job = 'batch' ORDER BY ts
SELECT job, CAST(value AS integer) FROM cpu WHERE job = 'api' AND instance = 'a' ORDER BY ts
SELECT value::bigint FROM cpu WHERE job = 'batch' ORDER BY ts
SELECT value::text FROM cpu WHERE job = 'batch' ORDER BY ts
SELECT value::numeric(10,2) FROM cpu WHERE job = 'batch' ORDER BY ts
SELECT round(value::numeric, 1) FROM cpu WHERE job = 'batch' ORDER BY ts
SELECT '42'::int + 1, '3.5'::float8 * 2, 10::text || 'x'
SELECT code::integer AS c, max(value) FROM http_requests_total GROUP BY 1 ORDER BY 1
SELECT CAST('2024-01-01' AS date)
SELECT 1::boolean, 'true'::boolean, 0 = 1
SELECT job, CASE WHEN instance IS NULL THEN 'none' WHEN instance = 'a' THEN 'first' END AS which FROM cpu GROUP BY job, instance ORDER BY job, which
SELECT format('%s-%s', job, instance) FROM cpu GROUP BY job, instance ORDER BY 1
SELECT format('%I = %L, %s%%', 'Job Name', NULL, 2.5::float8), format('%L', 'it''s'), format('%I', 'job')
SELECT format('%s %s', 'only one')
SELECT format('%d', 1)
-- differs: refused: to_char of a number is not implemented
SELECT to_char(12.5::float8, 'FM999.00')
SELECT 'a' < 'b', 'api' > 'db'

-- numbers
SELECT round(value), abs(value - 10) FROM cpu WHERE job = 'api' AND instance = 'b' ORDER BY ts
SELECT ceil(value), floor(value), trunc(value) FROM cpu WHERE job = 'batch' ORDER BY ts
SELECT sqrt(value), ln(value), log(value), exp(1.0::float8) FROM mem WHERE job = 'cache' LIMIT 1
-- differs: a numeric quotient has the dividend's scale plus 4 in DataFusion, 16 significant digits or more in PostgreSQL
SELECT power(2, 10), 2 ^ 10, 7 % 3, mod(7, 3), 7 / 2, 7.0 / 2, -7 / 2
SELECT sign(value - 10) FROM cpu WHERE job = 'api' AND instance = 'a' ORDER BY ts
SELECT pi(), degrees(pi()), radians(180)
SELECT count(*), count(*), max(value) - min(value), max(value) - min(value) FROM cpu WHERE value > 1
SELECT 1e3, 1.5e-3, 0.1 + 0.2
SELECT 0.1::float8 + 0.2::float8
SELECT 'NaN'::float8, 'Infinity'::float8, '-Infinity'::float8
-- differs: a numeric quotient has the dividend's scale plus 4 in DataFusion, 16 significant digits or more in PostgreSQL
SELECT 1.0 / 3
SELECT 1::float8 / 3
SELECT 2147483647 + 1
SELECT 9223372036854775807
SELECT 100 * value / 12 FROM cpu WHERE job = 'api' AND instance = 'b' ORDER BY ts
SELECT round(avg(value)::numeric, 2) FROM cpu
SELECT round(value::numeric, 2) AS v FROM mem WHERE job = 'api' ORDER BY ts LIMIT 3
SELECT width_bucket(value, 0, 30, 3) AS b, count(*) FROM cpu GROUP BY 1 ORDER BY 1
SELECT width_bucket(value, 30, 0, 4) AS b, count(*) FROM mem GROUP BY 1 ORDER BY 1
SELECT width_bucket(5.35::float8, 0.024::float8, 10.06::float8, 5), width_bucket(-1::float8, 0::float8, 1::float8, 2)
SELECT width_bucket(1::float8, 0::float8, 0::float8, 3)
SELECT width_bucket(1::float8, 0::float8, 1::float8, 0)
-- differs: cbrt in the last digit: PostgreSQL calls the C library's cbrt, which is not correctly rounded
SELECT cbrt(27::float8), gcd(12, 18), lcm(4, 6)
SELECT abs(-5), abs(-5.5), abs(-5.5::float8)

-- time
SELECT date_trunc('hour', ts) AS h, count(*) FROM cpu GROUP BY 1 ORDER BY 1
SELECT date_trunc('minute', ts) AS m, avg(value) FROM cpu WHERE job = 'db' GROUP BY 1 ORDER BY 1
SELECT date_trunc('day', ts), count(*) FROM mem GROUP BY 1 ORDER BY 1
SELECT ts, value FROM cpu WHERE job = 'db' ORDER BY ts DESC LIMIT 3
SELECT min(ts), max(ts) FROM mem
SELECT max(ts) - min(ts) FROM mem
SELECT count(*) FROM cpu WHERE ts > now() - interval '1 hour'
SELECT count(*) FROM cpu WHERE ts >= now() - interval '1 day' AND ts <= now()
SELECT count(*) FROM cpu WHERE ts < now() - interval '1 day'
SELECT count(*) FROM cpu WHERE ts BETWEEN now() - interval '2 hours' AND now()
SELECT count(*) FROM mem WHERE ts > (SELECT min(ts) FROM mem) + interval '5 minutes'
SELECT count(*) FROM mem WHERE ts >= (SELECT max(ts) FROM mem) - interval '3 minutes'
SELECT extract(epoch FROM max(ts)) - extract(epoch FROM min(ts)) FROM mem
SELECT date_part('minute', max(ts)) - date_part('minute', min(ts)) FROM mem
SELECT count(DISTINCT date_trunc('minute', ts)) FROM cpu
SELECT date_bin('5 minutes', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS b, count(*) FROM cpu GROUP BY 1 ORDER BY 1
SELECT date_bin('2 minutes', ts, TIMESTAMPTZ '2000-01-01') AS b, max(value) FROM mem WHERE job = 'api' GROUP BY 1 ORDER BY 1
SELECT to_timestamp(0)
SELECT to_timestamp(1700000000)
SELECT TIMESTAMPTZ '2024-05-01 12:30:00+00'
SELECT TIMESTAMP '2024-05-01 12:30:00'
SELECT TIMESTAMPTZ '2024-05-01 12:30:00+00' + INTERVAL '90 minutes'
SELECT date_trunc('month', TIMESTAMPTZ '2024-05-17 12:30:00+00')
SELECT extract(year FROM TIMESTAMPTZ '2024-05-17 12:30:00+00')
SELECT extract(dow FROM TIMESTAMPTZ '2024-05-17 12:30:00+00')
SELECT to_char(TIMESTAMPTZ '2024-05-17 12:30:00+00', 'YYYY-MM-DD HH24:MI')
SELECT INTERVAL '1 hour' + INTERVAL '30 minutes'
SELECT INTERVAL '90 minutes'
SELECT '2024-05-01'::date + 1
SELECT ts::date, count(*) FROM cpu GROUP BY 1 ORDER BY 1
SELECT count(*) FROM cpu WHERE ts::date = (SELECT max(ts)::date FROM cpu)
SELECT age(TIMESTAMPTZ '2024-05-02 00:00:00+00', TIMESTAMPTZ '2024-05-01 00:00:00+00')
SELECT age(TIMESTAMPTZ '2024-03-01 00:00:00+00', TIMESTAMPTZ '2024-01-31 00:00:00+00'), age(TIMESTAMPTZ '2024-01-31 00:00:00+00', TIMESTAMPTZ '2024-03-01 12:30:00+00')
SELECT age(TIMESTAMP '2001-04-10 00:00:00', TIMESTAMP '1957-06-13 00:00:00')
SELECT job, age(max(ts), min(ts)) FROM cpu GROUP BY job ORDER BY job
SELECT job, max(ts) AS last_seen FROM cpu GROUP BY job ORDER BY job
SELECT ts AT TIME ZONE 'UTC' FROM cpu WHERE job = 'batch' ORDER BY ts LIMIT 2
SELECT now() > TIMESTAMPTZ '2024-01-01 00:00:00+00'
SELECT current_date > DATE '2024-01-01'

-- window functions
SELECT job, instance, value, row_number() OVER (PARTITION BY job, instance ORDER BY ts) AS n FROM cpu WHERE job = 'api' ORDER BY job, instance, n
SELECT ts, value - lag(value) OVER (ORDER BY ts) AS d FROM cpu WHERE job = 'db' ORDER BY ts
SELECT job, value, rank() OVER (ORDER BY value DESC) FROM mem ORDER BY 3, job LIMIT 5
SELECT job, sum(value) OVER (PARTITION BY job) FROM mem WHERE ts = (SELECT max(ts) FROM mem) ORDER BY job
SELECT job, value, dense_rank() OVER (ORDER BY value) FROM mem WHERE ts = (SELECT max(ts) FROM mem) ORDER BY 3, job
SELECT ts, value, lead(value) OVER (ORDER BY ts) FROM cpu WHERE job = 'batch' ORDER BY ts
SELECT ts, value, lag(value, 2, 0::float8) OVER (ORDER BY ts) FROM cpu WHERE job = 'batch' ORDER BY ts
SELECT ts, avg(value) OVER (ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM cpu WHERE job = 'db' ORDER BY ts
SELECT ts, sum(value) OVER (ORDER BY ts) AS running FROM mem WHERE job = 'api' ORDER BY ts
SELECT ts, first_value(value) OVER (ORDER BY ts), last_value(value) OVER (ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) FROM mem WHERE job = 'db' ORDER BY ts
SELECT ts, max(value) OVER w, min(value) OVER w FROM cpu WHERE job = 'db' WINDOW w AS (ORDER BY ts ROWS 3 PRECEDING) ORDER BY ts
SELECT job, instance, value, ntile(2) OVER (ORDER BY value) FROM cpu WHERE ts = (SELECT min(ts) FROM cpu) ORDER BY value
SELECT job, value, percent_rank() OVER (ORDER BY value), cume_dist() OVER (ORDER BY value) FROM mem WHERE ts = (SELECT max(ts) FROM mem) ORDER BY value
SELECT handler, code, ts, value - lag(value) OVER (PARTITION BY handler, code, method ORDER BY ts) AS delta FROM http_requests_total WHERE handler = '/login' ORDER BY ts
SELECT handler, ts, CASE WHEN value < lag(value) OVER (PARTITION BY handler, code ORDER BY ts) THEN 'reset' ELSE 'ok' END FROM http_requests_total WHERE handler = '/login' ORDER BY ts
SELECT job, instance, value FROM (SELECT job, instance, value, row_number() OVER (PARTITION BY job, instance ORDER BY ts DESC) AS rn FROM cpu) t WHERE rn = 1 ORDER BY job, instance
SELECT job, value FROM (SELECT job, value, rank() OVER (PARTITION BY job ORDER BY value DESC) AS r FROM cpu) t WHERE r <= 2 ORDER BY job, value DESC
SELECT ts, value, nth_value(value, 2) OVER (ORDER BY ts) FROM mem WHERE job = 'api' ORDER BY ts
SELECT count(*) OVER () FROM cpu LIMIT 1
SELECT job, count(*) OVER (PARTITION BY job) FROM cpu GROUP BY job ORDER BY job

-- set operations
SELECT job FROM cpu UNION SELECT job FROM mem ORDER BY 1
SELECT job FROM cpu INTERSECT SELECT job FROM mem ORDER BY 1
SELECT job FROM mem EXCEPT SELECT job FROM cpu ORDER BY 1
SELECT count(*) FROM (SELECT job FROM cpu UNION ALL SELECT job FROM mem) AS both_tables
SELECT 'cpu' AS metric, count(*) FROM cpu UNION ALL SELECT 'mem', count(*) FROM mem ORDER BY 1
SELECT job, instance FROM cpu UNION SELECT job, instance FROM mem ORDER BY 1, 2
SELECT job FROM cpu EXCEPT ALL SELECT job FROM mem ORDER BY 1 LIMIT 3
SELECT instance FROM cpu INTERSECT ALL SELECT instance FROM mem ORDER BY 1 LIMIT 3
SELECT job, instance FROM cpu EXCEPT ALL SELECT job, instance FROM mem ORDER BY 1, 2 LIMIT 5
SELECT count(*) FROM (SELECT instance FROM cpu INTERSECT ALL SELECT instance FROM mem) t
SELECT instance AS i FROM mem INTERSECT ALL SELECT instance FROM cpu WHERE job = 'db' ORDER BY i
SELECT job FROM (SELECT job FROM cpu EXCEPT ALL SELECT job FROM cpu WHERE value > 5) t GROUP BY job ORDER BY job

-- subqueries
SELECT DISTINCT job FROM cpu WHERE job IN (SELECT job FROM mem) ORDER BY 1
SELECT DISTINCT c.job FROM cpu c WHERE EXISTS (SELECT 1 FROM mem m WHERE m.job = c.job) ORDER BY 1
SELECT job, value FROM mem WHERE value > (SELECT avg(value) FROM mem) ORDER BY job, value
SELECT DISTINCT c.job FROM cpu c WHERE NOT EXISTS (SELECT 1 FROM mem m WHERE m.job = c.job) ORDER BY 1
SELECT DISTINCT job FROM cpu WHERE job NOT IN (SELECT job FROM mem) ORDER BY 1
SELECT job, (SELECT max(value) FROM mem m WHERE m.job = c.job) FROM cpu c GROUP BY job ORDER BY job
-- differs: avg of integers is a double in DataFusion, numeric in PostgreSQL
SELECT avg(n) FROM (SELECT job, count(*) AS n FROM cpu GROUP BY job) t
SELECT max(s) FROM (SELECT ts, sum(value) AS s FROM cpu GROUP BY ts) t
SELECT job, value FROM cpu WHERE value = (SELECT max(value) FROM cpu) ORDER BY job
SELECT job FROM mem WHERE value > ALL (SELECT value FROM cpu) GROUP BY job ORDER BY job
SELECT job FROM mem WHERE value < ANY (SELECT value FROM cpu) GROUP BY job ORDER BY job

-- joins and CTEs
SELECT c.job, c.value + m.value FROM cpu c JOIN mem m ON c.job = m.job AND c.instance = m.instance AND c.ts = m.ts ORDER BY 1, 2
SELECT c.job, m.job FROM (SELECT DISTINCT job FROM cpu) c LEFT JOIN (SELECT DISTINCT job FROM mem) m ON c.job = m.job ORDER BY 1
WITH t AS (SELECT job, avg(value) AS a FROM cpu GROUP BY job) SELECT job, a FROM t WHERE a > 5 ORDER BY job
SELECT c.job, m.job FROM (SELECT DISTINCT job FROM cpu) c FULL OUTER JOIN (SELECT DISTINCT job FROM mem) m ON c.job = m.job ORDER BY 1, 2
SELECT c.job, m.job FROM (SELECT DISTINCT job FROM cpu) c RIGHT JOIN (SELECT DISTINCT job FROM mem) m ON c.job = m.job ORDER BY 2
SELECT count(*) FROM cpu c CROSS JOIN (SELECT DISTINCT job FROM mem) m
SELECT c.job, c.instance, c.value / m.value AS ratio FROM cpu c JOIN mem m USING (job, instance, ts) ORDER BY 1, 2, 3
SELECT job, instance, count(*) FROM cpu JOIN mem USING (job, instance) GROUP BY job, instance ORDER BY 1, 2
SELECT c.ts, c.value, m.value FROM cpu c INNER JOIN mem m ON m.ts = c.ts AND m.job = c.job WHERE c.job = 'db' ORDER BY c.ts
WITH last AS (SELECT job, instance, max(ts) AS ts FROM cpu GROUP BY job, instance) SELECT c.job, c.value FROM cpu c JOIN last l ON c.job = l.job AND c.instance IS NOT DISTINCT FROM l.instance AND c.ts = l.ts ORDER BY 1, 2
WITH a AS (SELECT job, sum(value) AS s FROM cpu GROUP BY job), b AS (SELECT job, sum(value) AS s FROM mem GROUP BY job) SELECT a.job, a.s, b.s FROM a LEFT JOIN b ON a.job = b.job ORDER BY a.job
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) SELECT sum(i) FROM n
SELECT t.code, t.total FROM (SELECT code, max(value) AS total FROM http_requests_total GROUP BY code) t ORDER BY t.total DESC
SELECT ok.ts, ok.value / (ok.value + err.value) FROM http_requests_total ok JOIN http_requests_total err ON ok.ts = err.ts AND ok.handler = err.handler WHERE ok.code = '200' AND err.code = '500' AND ok.value > 0 ORDER BY ok.ts
SELECT b.le, b.value FROM http_request_duration_seconds_bucket b WHERE b.ts = (SELECT max(ts) FROM http_request_duration_seconds_bucket) ORDER BY b.value
SELECT m.job, m.value FROM mem m, cpu c WHERE m.job = c.job AND m.ts = c.ts AND c.instance = m.instance AND c.value > 5 ORDER BY 1, 2
SELECT a.job, b.job FROM (SELECT DISTINCT job FROM cpu) a, (SELECT DISTINCT job FROM mem) b WHERE a.job < b.job ORDER BY 1, 2
SELECT c.job, l.n FROM (SELECT DISTINCT job FROM cpu) c LEFT JOIN LATERAL (SELECT count(*) AS n FROM mem m WHERE m.job = c.job) l ON true ORDER BY 1

-- rate-like arithmetic a SQL user writes by hand
SELECT handler, code, max(value) - min(value) AS increase FROM http_requests_total GROUP BY handler, code ORDER BY 1, 2
SELECT handler, code, (max(value) - min(value)) / extract(epoch FROM max(ts) - min(ts)) AS per_second FROM http_requests_total GROUP BY handler, code ORDER BY 1, 2
SELECT le, max(value) FROM http_request_duration_seconds_bucket GROUP BY le ORDER BY max(value)
SELECT le::float8 AS bound, max(value) FROM http_request_duration_seconds_bucket GROUP BY le ORDER BY 1

-- no table, generated rows, filtered aggregates
SELECT 1
SELECT 1 + 2, 'x' || 'y', 7.0::float8 / 2
SELECT 1 AS one, 'two' AS two, 3.0 AS three, NULL AS nothing
SELECT count(*) FILTER (WHERE value > 10), count(*) FROM cpu
SELECT x FROM generate_series(1, 5) AS g(x) ORDER BY x DESC
SELECT * FROM generate_series(1, 10, 3)
SELECT count(*) FROM generate_series(1, 1000)
SELECT g FROM generate_series(TIMESTAMPTZ '2024-01-01 00:00:00+00', TIMESTAMPTZ '2024-01-01 01:00:00+00', INTERVAL '15 minutes') AS g ORDER BY g
SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS v(n, s) ORDER BY n
SELECT version() LIKE '%15%'
SELECT current_user
-- differs: the session's functions answer promflow, not the database the client named
SELECT current_database()
SELECT current_schema()
SELECT NULL IS NULL, NULL = NULL, 1 IN (1, NULL), 2 IN (1, NULL)
SELECT coalesce(NULL, NULL, 3)
-- differs: avg of integers is a double in DataFusion, numeric in PostgreSQL
SELECT sum(x), avg(x), count(x) FROM (VALUES (1), (NULL), (3)) AS t(x)
SELECT TRUE AND NULL, FALSE AND NULL, TRUE OR NULL
SELECT typeof(1)
-- differs: refused: pg_typeof is not implemented
SELECT pg_typeof(1), pg_typeof(1.5), pg_typeof('a'::text), pg_typeof(1.5::float8)

-- whole rows and limits
SELECT * FROM cpu WHERE job = 'db' ORDER BY ts LIMIT 3
SELECT * FROM mem ORDER BY ts DESC, job LIMIT 4
SELECT * FROM http_requests_total WHERE handler = '/login' ORDER BY ts LIMIT 3 OFFSET 5
SELECT * FROM cpu ORDER BY value DESC LIMIT 1
SELECT job, value FROM cpu ORDER BY value DESC, job LIMIT 5 OFFSET 2
SELECT c.* FROM cpu c WHERE c.job = 'batch' ORDER BY c.ts LIMIT 2
SELECT *, value * 2 AS doubled FROM mem WHERE job = 'cache' ORDER BY ts LIMIT 2
SELECT job FROM cpu ORDER BY job LIMIT 0
SELECT job FROM cpu ORDER BY job FETCH FIRST 2 ROWS ONLY
SELECT cpu.job, cpu.value FROM cpu WHERE cpu.instance = 'b' ORDER BY cpu.ts LIMIT 2
SELECT value FROM public.cpu WHERE job = 'batch' ORDER BY ts LIMIT 1

-- statements PostgreSQL rejects
SELECT count(*) FROM cpuu
SELECT nope FROM cpu
SELECT job, value FROM cpu GROUP BY job
SELECT count(*) FROM cpu WHERE job = 1
SELECT 1 / 0
SELECT 1.0::float8 / 0
SELECT 'abc'::int
SELECT no_such_function(1)
-- differs: DataFusion coerces text and double to a common type where PostgreSQL rejects it (42804)
SELECT job FROM cpu UNION SELECT value FROM mem
SELECT job FROM cpu ORDER BY 5
SELECT sum(job) FROM cpu
SELECT FROM WHERE
SELECT count(*) FROM cpu WHERE value > 'high'
SELECT c.job FROM cpu c JOIN mem m ON c.job = m.job WHERE job = 'api'
SELECT job FROM cpu WHERE count(*) > 1

-- what Grafana's PostgreSQL data source sends: its macros expanded ($__timeFilter,
-- $__timeGroupAlias, $__time, $__unixEpochFilter), variable queries, the query builder's catalogs
SELECT floor(extract(epoch from ts)/60)*60 AS "time", avg(value) AS value FROM cpu WHERE ts BETWEEN '2020-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z' GROUP BY 1 ORDER BY 1
SELECT floor(extract(epoch from ts)/300)*300 AS "time", job AS metric, max(value) AS value FROM cpu WHERE ts BETWEEN '2020-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z' GROUP BY 1, 2 ORDER BY 1, 2
SELECT ts AS "time", value FROM cpu WHERE ts BETWEEN '2020-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z' AND job = 'api' AND instance = 'a' ORDER BY 1
SELECT ts AS "time", instance AS metric, value FROM mem WHERE ts >= '2020-01-01T00:00:00Z' AND ts <= '2100-01-01T00:00:00Z' ORDER BY 1, 2, 3
SELECT count(*) FROM cpu WHERE extract(epoch from ts) >= 1577836800 AND extract(epoch from ts) <= 4102444800
SELECT DISTINCT instance AS __text, instance AS __value FROM cpu WHERE job IN ('api', 'db') ORDER BY 1
SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name
SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'cpu' ORDER BY column_name

-- what drivers ask on connect and when they reflect tables (psycopg, SQLAlchemy)
SHOW transaction isolation level
SHOW standard_conforming_strings
SELECT current_setting('server_encoding'), current_setting('max_identifier_length')
SELECT current_setting('no_such_setting')
SELECT typname, typarray, typdelim FROM pg_catalog.pg_type WHERE typname IN ('int8', 'text', 'float8') ORDER BY 1
SELECT relname FROM pg_catalog.pg_class WHERE relkind = ANY (ARRAY['r', 'p']) AND relname IN ('cpu', 'mem') ORDER BY 1
SELECT count(*) FROM pg_catalog.pg_enum
SELECT c.relname, array_agg(a.attname ORDER BY a.attnum DESC) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid WHERE c.relname = 'mem' AND a.attnum > 0 GROUP BY c.relname

-- more of what monitoring users write: rounding, FILTER, ranking, DISTINCT ON, grouping sets,
-- gap filling, JSON, arrays and intervals
SELECT job, round(avg(value)::numeric, 2) AS avg_value FROM cpu GROUP BY job ORDER BY job
SELECT job, round(avg(value)::numeric, 2) FROM mem GROUP BY job ORDER BY 2 DESC
SELECT date_trunc('minute', ts) AS minute, count(*) FROM cpu GROUP BY 1 ORDER BY 1 LIMIT 3
SELECT date_trunc('hour', ts) AS hour, job, max(value) FROM cpu GROUP BY 1, 2 ORDER BY 1, 2
SELECT job, count(*) FILTER (WHERE value > 5) AS high, count(*) AS total FROM cpu GROUP BY job ORDER BY job
SELECT job, sum(CASE WHEN value > 5 THEN 1 ELSE 0 END) AS high FROM cpu GROUP BY job ORDER BY job
SELECT job, instance, value, rank() OVER (PARTITION BY job ORDER BY value DESC) AS r FROM mem ORDER BY job, r, instance LIMIT 8
SELECT job, value, dense_rank() OVER (ORDER BY value) FROM mem ORDER BY 3, 1 LIMIT 5
SELECT ts, value, avg(value) OVER (ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS moving FROM cpu WHERE job = 'batch' ORDER BY ts
SELECT ts, value, value - lag(value) OVER (ORDER BY ts) AS diff FROM http_requests_total WHERE code = '200' AND handler = '/api' AND method = 'get' ORDER BY ts
SELECT ts, lead(value, 2) OVER (ORDER BY ts) FROM cpu WHERE job = 'batch' ORDER BY ts
SELECT job, first_value(value) OVER (PARTITION BY job ORDER BY ts) AS first, last_value(value) OVER (PARTITION BY job ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS last FROM mem GROUP BY job, value, ts ORDER BY job LIMIT 3
SELECT job, ntile(2) OVER (ORDER BY job) FROM (SELECT DISTINCT job FROM cpu) t ORDER BY job
SELECT job, instance, row_number() OVER (PARTITION BY job, instance ORDER BY ts DESC) AS rn, value FROM cpu ORDER BY job, instance, rn LIMIT 6
SELECT * FROM (SELECT job, instance, value, row_number() OVER (PARTITION BY job, instance ORDER BY ts DESC) AS rn FROM cpu) t WHERE rn = 1 ORDER BY job, instance
SELECT DISTINCT ON (job) job, ts, value FROM cpu ORDER BY job, ts DESC
SELECT greatest(1, 2, 3), least(4, 5, 6), nullif(1, 1), nullif(1, 2)
SELECT coalesce(instance, 'unknown') AS inst, count(*) FROM cpu GROUP BY 1 ORDER BY 1
SELECT job, max(value) FILTER (WHERE instance = 'a') FROM cpu GROUP BY job ORDER BY job
SELECT extract(hour FROM ts) >= 0, extract(dow FROM ts) BETWEEN 0 AND 6 FROM cpu LIMIT 1
SELECT date_part('year', ts) > 2000 FROM cpu LIMIT 1
SELECT ts::date = current_date FROM cpu ORDER BY ts DESC LIMIT 1
SELECT to_char(ts, 'YYYY') = to_char(now(), 'YYYY') FROM cpu LIMIT 1
SELECT count(*) FROM cpu WHERE ts > now() - interval '1 day'
SELECT count(*) FROM cpu WHERE ts >= now() - '2 hours'::interval
SELECT job, count(*) FROM cpu WHERE ts BETWEEN now() - interval '7 days' AND now() GROUP BY job ORDER BY job
SELECT max(ts) - min(ts) FROM cpu
SELECT job, max(ts) - min(ts) AS span FROM mem GROUP BY job ORDER BY job
SELECT EXTRACT(EPOCH FROM (max(ts) - min(ts))) FROM cpu
-- differs: refused: to_char of a number is not implemented
SELECT job, to_char(max(value), 'FM999') FROM cpu GROUP BY job ORDER BY job
SELECT handler, sum(value) FROM http_requests_total GROUP BY ROLLUP(handler) ORDER BY handler NULLS LAST
SELECT code, method, count(*) FROM http_requests_total GROUP BY GROUPING SETS ((code), (method)) ORDER BY code, method
SELECT code, method, count(*) FROM http_requests_total GROUP BY CUBE (code, method) ORDER BY code NULLS FIRST, method NULLS FIRST
SELECT c.job, c.instance, c.value AS cpu, m.value AS mem FROM cpu c JOIN mem m ON c.job = m.job AND c.instance = m.instance AND c.ts = m.ts ORDER BY c.ts, c.job, c.instance LIMIT 5
SELECT c.job, avg(c.value) / avg(m.value) AS ratio FROM cpu c JOIN mem m USING (job, instance, ts) GROUP BY c.job ORDER BY 1
SELECT c.job FROM cpu c LEFT JOIN mem m ON c.job = m.job WHERE m.job IS NULL GROUP BY c.job ORDER BY 1
SELECT job FROM cpu c WHERE NOT EXISTS (SELECT 1 FROM mem m WHERE m.job = c.job) GROUP BY job
SELECT t.job, t.n FROM (SELECT job, count(*) AS n FROM cpu GROUP BY job) t WHERE t.n > (SELECT avg(n) FROM (SELECT count(*) AS n FROM cpu GROUP BY job) s) ORDER BY 1
WITH latest AS (SELECT job, instance, max(ts) AS ts FROM cpu GROUP BY job, instance) SELECT c.job, c.instance, c.value FROM cpu c JOIN latest l ON c.job = l.job AND c.instance IS NOT DISTINCT FROM l.instance AND c.ts = l.ts ORDER BY 1, 2
WITH per_job AS (SELECT job, avg(value) AS a FROM cpu GROUP BY job) SELECT job, a, a > (SELECT avg(a) FROM per_job) AS above FROM per_job ORDER BY job
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) SELECT sum(i) FROM n
SELECT g AS minute, count(c.value) FROM generate_series(date_trunc('minute', (SELECT min(ts) FROM cpu)), date_trunc('minute', (SELECT max(ts) FROM cpu)), interval '1 minute') g LEFT JOIN cpu c ON date_trunc('minute', c.ts) = g AND c.job = 'batch' GROUP BY g ORDER BY g LIMIT 4
SELECT count(*), min(g) = (SELECT min(ts) FROM cpu) FROM generate_series((SELECT min(ts) FROM cpu), (SELECT max(ts) FROM cpu), interval '1 minute') g
SELECT g FROM generate_series(1, (SELECT count(*) FROM mem)) g ORDER BY g DESC LIMIT 2
SELECT x FROM generate_series(10, (SELECT count(*) FROM mem WHERE job = 'api'), -3) AS t(x) ORDER BY x
-- differs: refused: generate_series reading an earlier FROM item is a correlated subquery DataFusion does not plan
SELECT b.h, count(c.value) FROM (SELECT date_trunc('hour', min(ts)) AS lo, date_trunc('hour', max(ts)) AS hi FROM cpu) r, generate_series(r.lo, r.hi, interval '1 hour') AS b(h) LEFT JOIN cpu c ON date_trunc('hour', c.ts) = b.h GROUP BY b.h ORDER BY b.h
SELECT upper(job), lower('ABC'), length(job), substr(job, 1, 2), left(job, 1), right(job, 1) FROM cpu GROUP BY job ORDER BY job
SELECT job || '-' || coalesce(instance, '') AS id FROM cpu GROUP BY job, instance ORDER BY 1
SELECT handler, replace(handler, '/', '_'), substring(handler from 2) FROM http_requests_total GROUP BY handler ORDER BY 1
SELECT regexp_match(handler, '/(\w+)') FROM http_requests_total GROUP BY handler ORDER BY 1
SELECT le, sum(value) FROM http_request_duration_seconds_bucket GROUP BY le ORDER BY le::float8
SELECT le::float8 AS bound, max(value) FROM http_request_duration_seconds_bucket WHERE le <> '+Inf' GROUP BY 1 ORDER BY 1
SELECT count(*) FROM http_request_duration_seconds_bucket WHERE le = '+Inf'
SELECT 'Infinity'::float8, '-Infinity'::float8, 'NaN'::float8
SELECT value FROM cpu WHERE job = 'batch' ORDER BY value DESC NULLS LAST LIMIT 3 OFFSET 1
SELECT job, instance FROM cpu GROUP BY 1, 2 HAVING count(*) >= 10 ORDER BY 1, 2
SELECT abs(-5), mod(10, 3), round(2.5), round(3.5), round(-2.5), trunc(2.7), ceiling(2.1)
SELECT round(123.456, 1), round(123.456, -1), trunc(123.456, 2)
-- differs: a numeric quotient has the dividend's scale plus 4 in DataFusion, 16 significant digits or more in PostgreSQL
SELECT 10 / 4, 10 % 4, 10.0 / 4, 2 ^ 3
-- differs: log(b, x) of integers is a double in DataFusion, numeric in PostgreSQL
SELECT sqrt(16), cbrt(8::float8), exp(0), ln(1), log(100), log(2, 8)
SELECT random() < 1
SELECT now() > '2020-01-01'::timestamptz, current_timestamp > '2020-01-01'
SELECT count(*) AS "Count", max(value) AS "Max Value" FROM cpu
SELECT job AS "Job" FROM cpu GROUP BY "Job" ORDER BY "Job"
SELECT cpu.job FROM cpu GROUP BY cpu.job ORDER BY cpu.job
SELECT COUNT(*) FROM Cpu WHERE JOB = 'api'
SELECT * FROM cpu WHERE false
SELECT count(*) FROM cpu WHERE instance IS NULL OR instance = 'a'
SELECT avg(value)::int FROM cpu
SELECT sum(value)::bigint, count(*)::int FROM mem
SELECT stddev(value) FROM cpu WHERE job = 'batch'
SELECT corr(c.value, m.value) IS NOT NULL FROM cpu c JOIN mem m USING (job, instance, ts)
SELECT regr_slope(value, extract(epoch FROM ts)) > -1000 FROM cpu WHERE job = 'batch'
SELECT mode() WITHIN GROUP (ORDER BY job) FROM cpu
-- differs: refused: DataFusion has no JSON functions
SELECT json_build_object('job', job, 'n', count(*)) FROM cpu GROUP BY job ORDER BY job
-- differs: refused: DataFusion has no JSON functions
SELECT json_agg(job ORDER BY job) FROM (SELECT DISTINCT job FROM cpu) t
SELECT array_length(array_agg(value), 1) FROM cpu WHERE job = 'batch'
SELECT (array_agg(value ORDER BY ts DESC))[1] FROM cpu WHERE job = 'batch'
SELECT unnest(ARRAY['a', 'b'])
SELECT job, ARRAY_AGG(value ORDER BY ts) FROM cpu WHERE job = 'batch' GROUP BY job
SELECT 1 WHERE 1 = 1 UNION ALL SELECT 2 ORDER BY 1 DESC
SELECT job FROM cpu INTERSECT SELECT job FROM mem ORDER BY 1
SELECT job FROM cpu EXCEPT SELECT job FROM mem ORDER BY 1
SELECT CASE job WHEN 'api' THEN 1 WHEN 'db' THEN 2 ELSE 0 END AS k, count(*) FROM cpu GROUP BY 1 ORDER BY 1
SELECT job, CASE WHEN avg(value) > 10 THEN 'hot' ELSE 'cool' END FROM cpu GROUP BY job ORDER BY job
SELECT x, x * 2 FROM generate_series(1, 5) AS x
SELECT * FROM generate_series(1, 10, 3)
SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS v(n, s) ORDER BY n DESC
SELECT count(*) FROM cpu, mem WHERE cpu.job = mem.job AND cpu.ts = mem.ts AND cpu.instance = mem.instance
SELECT max(value) FILTER (WHERE job = 'api') - min(value) FILTER (WHERE job = 'api') FROM cpu
SELECT to_timestamp(0), to_timestamp(1700000000)
SELECT date_bin('5 minutes', ts, TIMESTAMPTZ '2000-01-01') AS b, count(*) FROM cpu GROUP BY 1 ORDER BY 1 LIMIT 2
SELECT interval '1 hour' * 2, interval '90 minutes', interval '1 day' - interval '1 hour'
SELECT '2024-05-01 10:00:00+00'::timestamptz + interval '1 month'
SELECT date '2024-05-01' + 7, date '2024-05-08' - date '2024-05-01'
SELECT extract(epoch FROM interval '1 hour')
SELECT extract(hour FROM ts), extract(minute FROM ts), extract(second FROM ts), extract(milliseconds FROM ts), extract(dow FROM ts) FROM cpu ORDER BY ts LIMIT 1
SELECT to_timestamp(extract(epoch FROM ts)) = ts, extract(epoch FROM ts)::bigint % 60 FROM cpu ORDER BY ts LIMIT 1
SELECT date_part('epoch', max(ts)) - date_part('epoch', min(ts)) FROM cpu
SELECT make_interval(hours => 2)
SELECT justify_hours(interval '27 hours')
SELECT justify_days(interval '35 days'), justify_interval(interval '1 month -1 hour'), justify_hours(interval '-27 hours')
SELECT make_interval(1, 2, 3, 4, 5, 6, 7.5), make_interval(days => 10, mins => 30)
SELECT date_trunc('hour', max(ts)) - make_interval(hours => 1) < min(ts) FROM cpu
SELECT ARRAY['a', 'b'], ARRAY[1, 2, 3], array_to_string(ARRAY['x', 'y'], '-'), cardinality(ARRAY[1, 2])
SELECT count(*) FROM cpu WHERE job = ANY (ARRAY['api', 'db'])
SELECT count(*) FROM cpu WHERE job <> ALL (ARRAY['api', 'db'])
SELECT string_to_array('a,b,c', ','), array_position(ARRAY['a', 'b'], 'b'), array_append(ARRAY[1], 2)
SELECT job, array_agg(DISTINCT instance ORDER BY instance) FROM cpu GROUP BY job ORDER BY job
SELECT instance FROM cpu WHERE job = 'api' GROUP BY instance HAVING array_length(array_agg(value), 1) > 5 ORDER BY 1
SELECT TIMESTAMPTZ '2024-07-01 10:00:00+00' AT TIME ZONE 'Europe/Paris', TIMESTAMP '2024-07-01 10:00:00' AT TIME ZONE 'America/New_York'
SELECT date_trunc('day', max(ts) AT TIME ZONE 'Asia/Tokyo') <= max(ts) AT TIME ZONE 'Asia/Tokyo' FROM cpu
SELECT TIMESTAMPTZ '2024-03-31 00:30:00+00' AT TIME ZONE 'Europe/Berlin', TIMESTAMPTZ '2024-03-31 01:30:00+00' AT TIME ZONE 'Europe/Berlin'
SELECT now() AT TIME ZONE 'Mars/Olympus'
SELECT job, percentile_disc(0.9) WITHIN GROUP (ORDER BY value), percentile_disc(0.1) WITHIN GROUP (ORDER BY value DESC) FROM mem GROUP BY job ORDER BY job
SELECT percentile_cont(0.25) WITHIN GROUP (ORDER BY value) FROM cpu WHERE value > 2
SELECT instance, mode() WITHIN GROUP (ORDER BY job) FROM cpu WHERE value > 0 GROUP BY instance ORDER BY instance
SELECT percentile_cont(1.5) WITHIN GROUP (ORDER BY value) FROM cpu WHERE value > 2
SELECT interval '1 hour' * 2, 3 * interval '90 minutes', interval '1 month' * 1.5, interval '1 day' * 0.5, INTERVAL '5 minutes' * 2.5
SELECT count(*) FROM cpu WHERE ts > (SELECT max(ts) FROM cpu) - interval '1 minute' * 3
SELECT count(*) FROM cpu WHERE value > 2.5 AND value < 7.25 OR value = 10.0
SELECT value * 1.5 + 0.25, value / 2.0, 100.0 - value FROM cpu WHERE job = 'batch' ORDER BY ts LIMIT 3
SELECT job, round(avg(value)::numeric, 2) * 100, max(value) * 0.5 FROM mem GROUP BY job ORDER BY job
SELECT CASE WHEN value > 5.5 THEN 'high' ELSE 'low' END, count(*) FROM cpu GROUP BY 1 ORDER BY 1
SELECT sum(value * 0.1) > 0, greatest(max(value), 1.5), coalesce(min(value), 0.0) FROM cpu
SELECT CASE WHEN value > 5 THEN value ELSE 0.5 END, coalesce(NULL, 1.50), nullif(value, 1.0) FROM cpu WHERE job = 'batch' ORDER BY ts LIMIT 3
SELECT value FROM cpu WHERE job = 'batch' UNION ALL SELECT 0.5 ORDER BY 1 LIMIT 2
SELECT x FROM (VALUES (1.5), (2.25)) AS t(x) ORDER BY 1
SELECT INTERVAL '1 day' * 1e30
SELECT TIMESTAMPTZ '2024-01-01 00:00:00+00' AT TIME ZONE '+02:00', TIMESTAMP '2018-11-04 01:30:00' AT TIME ZONE 'America/New_York'
SELECT round(1.0000000000000000000, -20), floor(-0.5), ceil(0.5), round(0.99999999999999999999999999999999999999)
SELECT interval '1 hour' * 2 * 3, 2 * interval '1 day' * 0.5

-- what a monitoring user writes, found wanting by a probe of another data set
SELECT TIMESTAMP '2024-01-01 00:00', TIMESTAMPTZ '2024-01-01 10:30', '2024-01-01 9:30'::timestamptz
SELECT count(*) FROM cpu WHERE ts >= '2000-01-01 00:00' AND ts < '2100-01-01 00:00'
SELECT min(ts)::text = to_char(min(ts), 'YYYY-MM-DD HH24:MI:SS') || '+00' FROM cpu
SELECT concat('at ', TIMESTAMPTZ '2024-05-01 12:00:07.25+00'), 'at ' || TIMESTAMP '2024-05-01 12:00:00', format('%s', 2.5::float8)
SELECT extract(second FROM TIMESTAMPTZ '2024-05-01 12:00:07.25+00'), date_part('second', TIMESTAMP '2024-05-01 12:00:07.25'), extract(milliseconds FROM TIMESTAMP '2024-05-01 12:00:07.25')
SELECT extract(epoch FROM INTERVAL '1 day 02:03:04.5'), date_part('epoch', INTERVAL '1 year 1 mon'), extract(second FROM INTERVAL '-00:00:01.5')
SELECT INTERVAL '1 day 02:03:04.5', '-00:05'::interval, INTERVAL '2 hours 30 minutes'
SELECT '1.50'::numeric, (-1.25)::numeric * 2, 0.5::numeric
SELECT job, instance, sum(value), avg(value) FROM cpu GROUP BY job, instance ORDER BY job, instance NULLS LAST
SELECT job, ts, sum(value) OVER (PARTITION BY job ORDER BY ts ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING), avg(value) OVER (PARTITION BY job ORDER BY ts ROWS 2 PRECEDING) FROM cpu WHERE instance = 'a' ORDER BY job, ts
SELECT * FROM http_requests_total WHERE handler = '/login' ORDER BY ts LIMIT 2
SELECT avg(nullif(value, 4)), sum(value) / count(*) FROM cpu WHERE job = 'db'
SELECT generate_series(1, 3) AS x, 'a' AS y
SELECT count(*) FROM generate_series(TIMESTAMPTZ '2024-01-01 00:00:00+00', TIMESTAMPTZ '2024-01-01 01:00:00+00', '5 minutes') g
SELECT job, ts, c.value - m.value FROM cpu c JOIN mem m USING (job, instance, ts) WHERE job = 'api' AND ts > (SELECT min(ts) FROM cpu) ORDER BY ts LIMIT 3
SELECT tablename, tableowner IS NOT NULL FROM pg_tables WHERE schemaname = 'public' ORDER BY 1
SELECT schema_name FROM information_schema.schemata ORDER BY 1
SHOW search_path
SELECT sum(value) / count(*) FROM cpu WHERE job = 'nothing'
SELECT job, max(value) / min(value) FROM cpu GROUP BY job ORDER BY 1
SELECT sum(value) / 1e9, max(value) * 1e15, 1e3 FROM mem WHERE job = 'api'
SELECT max(value) / (min(value) - 4) FROM cpu WHERE job = 'db'
SELECT job, every(value > 1), bool_and(value > 1) FROM cpu GROUP BY job ORDER BY job
SELECT interval '2 hours 30 minutes' / 5, interval '1 hour' / 4, interval '1 day' * 1.5
SELECT DATE '2024-02-28' + interval '1 day', DATE '2024-02-28' - interval '1 hour', interval '36 hours' + DATE '2024-02-28'
SELECT to_char(TIMESTAMPTZ '2024-12-31 23:59:59.987+00', 'FMMonth FMDD, YYYY "week" IW, Q"Q", DDD'), to_char(TIMESTAMPTZ '2024-03-05 07:08:09+00', 'Day, Month, FMHH12:MI AM, Dy Mon, HH24:MI:SS.MS')
SELECT job, to_char(min(ts), 'YYYY-MM-DD') = to_char(max(ts), 'YYYY-MM-DD') FROM cpu GROUP BY job ORDER BY job
SELECT to_char(DATE '2024-03-05', 'FMDD/FMMM/YY'), to_char(TIMESTAMP '2024-03-05 17:00:00', 'HH12 am, "Q"Q, J')
SELECT job, percentile_cont(0.9) WITHIN GROUP (ORDER BY value DESC), percentile_cont(0.3) WITHIN GROUP (ORDER BY value DESC) FROM cpu GROUP BY job ORDER BY job
-- out of range, as PostgreSQL: overflow and underflow of doubles and integers are errors
SELECT 1e308::float8 * 10
SELECT 9223372036854775807::bigint + 1
SELECT 2147483647::int + 1
SELECT count(*) * 9223372036854775807 FROM cpu
SELECT exp(1000::float8), 1
SELECT exp(-1000::float8)
SELECT power(10::float8, 400)
SELECT max(value) * 1e308 FROM mem
SELECT 1e-300::float8 * 1e-300::float8
SELECT '-Infinity'::float8 * 2, 'Infinity'::float8 + 1
SELECT power(2, 10), 2 ^ 10, power(2.5::float8, 2), 10 ^ -2, 3 * 4 + 1
SELECT power(-8::float8, 0.5::float8)
SELECT mod(17.5, 4), mod(-17, 4), 17 % -4, mod(7, 2.5), 7.5 % 2
SELECT mod(7, 0)
-- differs: refused: a power of numeric values has PostgreSQL's numeric precision, the engine's a double's
SELECT 2 ^ 0.5, 2.0 ^ 10
-- catalogs: a regclass reads and prints names, no column is declared NOT NULL
SELECT 'cpu'::regclass, 'cpu'::regclass::text, 'CPU'::regclass::oid > 0, 'public.cpu'::regclass::text
SELECT relname FROM pg_class WHERE oid = '"mem"'::regclass
SELECT 'nothing_here'::regclass
SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = 'cpu'::regclass AND attnum > 0 ORDER BY attnum
SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = 'mem' ORDER BY ordinal_position
-- what PostgreSQL rejects
SELECT value::boolean FROM cpu LIMIT 1
SELECT 1.5::boolean
SELECT date_bin('1 month', ts, TIMESTAMPTZ '2001-01-01') FROM cpu LIMIT 1
SELECT job, max(value) AS m FROM cpu GROUP BY job HAVING m > 1
SELECT job, max(value) AS m FROM cpu GROUP BY job ORDER BY m * -1
SELECT job, max(value) AS m FROM cpu GROUP BY job ORDER BY m DESC
SELECT job AS j, count(*) AS n FROM cpu GROUP BY j HAVING count(*) > 1 ORDER BY n, j
SELECT date_trunc('day', DATE '2024-02-28'), DATE '2024-03-01' - DATE '2024-02-01', date_trunc('month', '2024-02-28'::date)
-- functions PostgreSQL has and DataFusion lacks
SELECT job, quote_literal(job), quote_ident('Job Name'), quote_ident(job), quote_nullable(NULL::text), quote_literal(2.5::float8) FROM cpu GROUP BY job ORDER BY 1
SELECT regexp_split_to_array('node-1:9100', '[-:]'), array_length(regexp_split_to_array('a,b,,c', ','), 1)
SELECT job, regexp_split_to_array(job, 'a') FROM cpu GROUP BY job ORDER BY job
SELECT pg_size_pretty(10239::bigint), pg_size_pretty(10240::bigint), pg_size_pretty(8206154752::bigint), pg_size_pretty(-123456789::bigint), pg_size_pretty(1099511627776::bigint)
SELECT job, pg_size_pretty((max(value) * 1e6)::bigint) FROM mem GROUP BY job ORDER BY job
SELECT div(7, 2), div(-7, 2), div(7.5, 2), div(9.9, 0.5)
SELECT div(1, 0)
SELECT make_timestamptz(2024, 5, 1, 12, 0, 0), make_timestamptz(2024, 2, 29, 23, 59, 59.5)
SELECT make_timestamptz(2023, 2, 29, 0, 0, 0)
SELECT count(*) FROM cpu WHERE job LIKE ANY (ARRAY['ap%', 'db'])
SELECT count(*) FROM cpu WHERE job NOT LIKE ANY (ARRAY['ap%', 'db'])
SELECT job, count(*) FROM cpu WHERE job ILIKE ANY (ARRAY['AP%', 'B%']) GROUP BY job ORDER BY job
SELECT (max(value) * 1e9)::int FROM mem
SELECT 3e9::int
SELECT 70000::smallint, 1
SELECT 2.5e1::int, 3e9::bigint
SELECT column_name, column_default, numeric_precision, numeric_precision_radix, datetime_precision, character_maximum_length FROM information_schema.columns WHERE table_name = 'cpu' ORDER BY ordinal_position
SELECT quote_ident('user'), quote_ident('between'), quote_ident('name'), quote_ident('idle')
SELECT format('%I.%I', 'select', 'cpu'), quote_ident(job) FROM cpu GROUP BY job ORDER BY 2
-- time arithmetic: a time minus a time is an interval, which multiplies and divides
SELECT max(ts) - min(ts), (max(ts) - min(ts)) / 2, (max(ts) - min(ts)) * 2, 3 * (max(ts) - min(ts)) FROM cpu
SELECT justify_interval(max(ts) - min(ts)), age(max(ts), min(ts)) FROM mem
SELECT TIMESTAMPTZ '2024-01-02 03:00:00+00' - TIMESTAMPTZ '2024-01-01 00:00:00+00', TIMESTAMP '2024-01-01' - TIMESTAMP '2024-01-03 01:00'
SELECT job, (max(ts) - min(ts)) / count(*) FROM cpu GROUP BY job ORDER BY job
SELECT min(ts) - max(ts) < interval '0 seconds', (max(ts) - min(ts)) > interval '1 minute' FROM cpu
SELECT interval '1 hour' / 0
