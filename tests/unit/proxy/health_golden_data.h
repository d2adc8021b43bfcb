#pragma once
// Goldens for health_golden_test.cc, taken from the code before the move (issue #12).
// Regenerate only for an intended, documented change: MI_HEALTH_GOLDEN_DIR=<dir> writes what the test got.

inline const char kGoldenEmptyStatus[] = R"golden({"version":"9.8.7-\"rc\\1\"","now":"2026-01-01T00:00:00Z","start_time":"2026-01-01T00:00:00Z","start_time_epoch":1767225600,"uptime_seconds":0,"config_digest":"0123456789abcdef","listeners":["127.0.0.1:50342","[::1]:50342"],"ready":false,"not_ready_reason":"the first prefetch round has not finished","reload":{"result":"none","time":null,"time_epoch":null,"error":null},"upstream":{"endpoint":"http://169.254.169.254/metadata/identity/oauth2/token","state":"unknown","last_success":null,"last_success_epoch":null,"last_error":null,"requests_total":0,"retries_total":0,"throttle_pauses_total":0,"latency_ms":{"p50":0.0,"p99":0.0,"samples":0},"throttled_until":null,"throttled_until_epoch":null,"in_flight":0,"max_concurrent":3,"budget_in_use":0.0,"queue_depth":0,"queued_callers":0,"queued_background":0},"cache":{"keys":0,"hits":0,"misses":0,"coalesced":0,"waiters":0,"shed":0},"summary":{"ok":0,"refreshing":0,"degraded":0,"failing":0},"entries_total":0,"entries_shown":0,"truncated":false,"full_view":"/status?entries=all","identities":[]})golden";

inline const char kGoldenEmptyMetrics[] = R"golden(# HELP mi_agent_build_info Build information; the value is always 1.
# TYPE mi_agent_build_info gauge
mi_agent_build_info{version="9.8.7-\"rc\\1\"",revision="abc1234"} 1
# HELP mi_agent_ready 1 when the agent is ready (as /readyz answers 200), else 0.
# TYPE mi_agent_ready gauge
mi_agent_ready 0
# HELP mi_agent_process_start_time_seconds Start time of the process since the Unix epoch in seconds.
# TYPE mi_agent_process_start_time_seconds gauge
mi_agent_process_start_time_seconds 1767225600
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1767225600
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 0.25
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 8388608
# HELP process_virtual_memory_bytes Virtual memory size in bytes.
# TYPE process_virtual_memory_bytes gauge
process_virtual_memory_bytes 67108864
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 12
# HELP process_max_fds Maximum number of open file descriptors.
# TYPE process_max_fds gauge
process_max_fds 1024
# HELP mi_agent_requests_total Token requests answered, by route and HTTP status code.
# TYPE mi_agent_requests_total counter
# HELP mi_agent_request_duration_seconds Time from a token request's arrival to its answer, by route and cache outcome (hit, miss, coalesced, none: answered without the cache).
# TYPE mi_agent_request_duration_seconds histogram
# HELP mi_agent_cache_hits_total Token requests served from the cache.
# TYPE mi_agent_cache_hits_total counter
mi_agent_cache_hits_total 0
# HELP mi_agent_cache_misses_total Token requests that waited for IMDS.
# TYPE mi_agent_cache_misses_total counter
mi_agent_cache_misses_total 0
# HELP mi_agent_cache_coalesced_total Misses that joined an IMDS request already under way.
# TYPE mi_agent_cache_coalesced_total counter
mi_agent_cache_coalesced_total 0
# HELP mi_agent_cache_negative_hits_total Requests answered from a cached IMDS rejection.
# TYPE mi_agent_cache_negative_hits_total counter
mi_agent_cache_negative_hits_total 0
# HELP mi_agent_cache_evictions_total Keys dropped from the cache, by reason.
# TYPE mi_agent_cache_evictions_total counter
mi_agent_cache_evictions_total{reason="idle"} 0
mi_agent_cache_evictions_total{reason="lru"} 0
# HELP mi_agent_cache_keys Keys (identity and resource) in the cache.
# TYPE mi_agent_cache_keys gauge
mi_agent_cache_keys 0
# HELP mi_agent_waiters Callers waiting for an IMDS answer.
# TYPE mi_agent_waiters gauge
mi_agent_waiters 0
# HELP mi_agent_requests_shed_total Callers answered 429 because the agent was shedding load.
# TYPE mi_agent_requests_shed_total counter
mi_agent_requests_shed_total 0
# HELP mi_agent_requests_deadline_expired_total Callers answered at their deadline without a token.
# TYPE mi_agent_requests_deadline_expired_total counter
mi_agent_requests_deadline_expired_total 0
# HELP mi_agent_upstream_requests_total IMDS requests finished, by HTTP status class (error: no HTTP answer).
# TYPE mi_agent_upstream_requests_total counter
mi_agent_upstream_requests_total{class="error"} 0
mi_agent_upstream_requests_total{class="1xx"} 0
mi_agent_upstream_requests_total{class="2xx"} 0
mi_agent_upstream_requests_total{class="3xx"} 0
mi_agent_upstream_requests_total{class="4xx"} 0
mi_agent_upstream_requests_total{class="5xx"} 0
# HELP mi_agent_upstream_retries_total IMDS requests retried after a failure.
# TYPE mi_agent_upstream_retries_total counter
mi_agent_upstream_retries_total 0
# HELP mi_agent_upstream_throttle_pauses_total Times IMDS throttled the agent (429) and upstream requests paused.
# TYPE mi_agent_upstream_throttle_pauses_total counter
mi_agent_upstream_throttle_pauses_total 0
# HELP mi_agent_upstream_same_token_total Refreshes for which IMDS returned the token already cached.
# TYPE mi_agent_upstream_same_token_total counter
mi_agent_upstream_same_token_total 0
# HELP mi_agent_upstream_up 1 unless the last IMDS answer was a failure.
# TYPE mi_agent_upstream_up gauge
mi_agent_upstream_up 1
# HELP mi_agent_tokens Cache keys by state (ok, refreshing, degraded, failing).
# TYPE mi_agent_tokens gauge
mi_agent_tokens{state="ok"} 0
mi_agent_tokens{state="refreshing"} 0
mi_agent_tokens{state="degraded"} 0
mi_agent_tokens{state="failing"} 0
# HELP mi_agent_upstream_latency_seconds IMDS request latency in seconds.
# TYPE mi_agent_upstream_latency_seconds histogram
mi_agent_upstream_latency_seconds_bucket{le="0.001"} 0
mi_agent_upstream_latency_seconds_bucket{le="0.0025"} 0
mi_agent_upstream_latency_seconds_bucket{le="0.005"} 0
mi_agent_upstream_latency_seconds_bucket{le="0.01"} 0
mi_agent_upstream_latency_seconds_bucket{le="0.025"} 0
mi_agent_upstream_latency_seconds_bucket{le="0.05"} 0
mi_agent_upstream_latency_seconds_bucket{le="0.1"} 0
mi_agent_upstream_latency_seconds_bucket{le="0.25"} 0
mi_agent_upstream_latency_seconds_bucket{le="0.5"} 0
mi_agent_upstream_latency_seconds_bucket{le="1"} 0
mi_agent_upstream_latency_seconds_bucket{le="2.5"} 0
mi_agent_upstream_latency_seconds_bucket{le="10"} 0
mi_agent_upstream_latency_seconds_bucket{le="+Inf"} 0
mi_agent_upstream_latency_seconds_sum 0
mi_agent_upstream_latency_seconds_count 0
# HELP mi_agent_upstream_in_flight IMDS requests in flight.
# TYPE mi_agent_upstream_in_flight gauge
mi_agent_upstream_in_flight 0
# HELP mi_agent_upstream_max_concurrent The IMDS budget's cap on concurrent requests.
# TYPE mi_agent_upstream_max_concurrent gauge
mi_agent_upstream_max_concurrent 3
# HELP mi_agent_upstream_queue_depth IMDS requests waiting for the budget, by priority.
# TYPE mi_agent_upstream_queue_depth gauge
mi_agent_upstream_queue_depth{priority="caller"} 0
mi_agent_upstream_queue_depth{priority="background"} 0
# HELP mi_agent_upstream_queue_rejected_total IMDS requests refused because the queue was full.
# TYPE mi_agent_upstream_queue_rejected_total counter
mi_agent_upstream_queue_rejected_total 0
# HELP mi_agent_upstream_pause_remaining_seconds Seconds until a throttle pause ends (0: not paused).
# TYPE mi_agent_upstream_pause_remaining_seconds gauge
mi_agent_upstream_pause_remaining_seconds 0
# HELP mi_agent_open_connections Open client connections, by listener.
# TYPE mi_agent_open_connections gauge
mi_agent_open_connections{listener="token"} 0
mi_agent_open_connections{listener="health"} 0
# HELP mi_agent_connections_accepted_total Client connections accepted, by listener.
# TYPE mi_agent_connections_accepted_total counter
mi_agent_connections_accepted_total{listener="token"} 0
mi_agent_connections_accepted_total{listener="health"} 0
# HELP mi_agent_connections_rejected_total Client connections refused at the connection limit (503), by listener.
# TYPE mi_agent_connections_rejected_total counter
mi_agent_connections_rejected_total{listener="token"} 0
mi_agent_connections_rejected_total{listener="health"} 0
# HELP mi_agent_connections_timed_out_total Client connections closed by the header or idle timeout, by listener.
# TYPE mi_agent_connections_timed_out_total counter
mi_agent_connections_timed_out_total{listener="token"} 0
mi_agent_connections_timed_out_total{listener="health"} 0
# HELP mi_agent_http_protocol_errors_total Requests refused as malformed or too large (400, 413, 431, 505), by listener.
# TYPE mi_agent_http_protocol_errors_total counter
mi_agent_http_protocol_errors_total{listener="token"} 0
mi_agent_http_protocol_errors_total{listener="health"} 0
)golden";

inline const char kGoldenBusyStatus[] = R"golden({"version":"9.8.7-\"rc\\1\"","now":"2026-01-01T00:10:02Z","start_time":"2026-01-01T00:00:00Z","start_time_epoch":1767225600,"uptime_seconds":602,"config_digest":"0123456789abcdef","listeners":["127.0.0.1:50342","[::1]:50342"],"ready":true,"reload":{"result":"none","time":null,"time_epoch":null,"error":null},"upstream":{"endpoint":"http://169.254.169.254/metadata/identity/oauth2/token","state":"failing","last_success":"2026-01-01T00:00:00Z","last_success_epoch":1767225600,"last_error":{"time":"2026-01-01T00:10:01Z","time_epoch":1767226201,"status":429,"error":"too_many_requests","description":null},"requests_total":6,"retries_total":2,"throttle_pauses_total":1,"latency_ms":{"p50":20.0,"p99":151368.0,"samples":6},"throttled_until":"2026-01-01T00:10:31Z","throttled_until_epoch":1767226231,"in_flight":0,"max_concurrent":3,"budget_in_use":0.0,"queue_depth":1,"queued_callers":1,"queued_background":0},"cache":{"keys":6,"hits":4,"misses":6,"coalesced":0,"waiters":2,"shed":0},"summary":{"ok":1,"refreshing":1,"degraded":1,"failing":3},"entries_total":6,"entries_shown":6,"truncated":false,"full_view":"/status?entries=all","identities":[{"identity":"default","selector":"default","id":"","resources":[{"resource":"https://storage.azure.com/","state":"failing","prefetch":false,"expires_on":null,"expires_at":null,"expires_in_seconds":null,"last_refresh":null,"last_refresh_epoch":null,"next_refresh":null,"next_refresh_epoch":null,"last_used":"2026-01-01T00:10:01Z","last_used_epoch":1767226201,"last_error":{"status":429,"error":"too_many_requests","description":null},"consecutive_failures":1,"hits":0,"misses":1},{"resource":"https://refreshing.example/","state":"refreshing","prefetch":false,"expires_on":null,"expires_at":null,"expires_in_seconds":null,"last_refresh":null,"last_refresh_epoch":null,"next_refresh":null,"next_refresh_epoch":null,"last_used":"2026-01-01T00:10:01Z","last_used_epoch":1767226201,"last_error":null,"consecutive_failures":0,"hits":0,"misses":1},{"resource":"https://management.azure.com/","state":"ok","prefetch":false,"expires_on":1767312000,"expires_at":"2026-01-02T00:00:00Z","expires_in_seconds":85798,"last_refresh":"2026-01-01T00:00:00Z","last_refresh_epoch":1767225600,"next_refresh":"2026-01-01T23:47:30Z","next_refresh_epoch":1767311250,"last_used":"2026-01-01T00:01:00Z","last_used_epoch":1767225660,"last_error":null,"consecutive_failures":0,"hits":4,"misses":1}]},{"identity":"client_id=0d1e2f30-aaaa-4bbb-8ccc-123456789abc","selector":"client_id","id":"0d1e2f30-aaaa-4bbb-8ccc-123456789abc","resources":[{"resource":"https://vault.azure.net","state":"failing","prefetch":false,"expires_on":null,"expires_at":null,"expires_in_seconds":null,"last_refresh":null,"last_refresh_epoch":null,"next_refresh":null,"next_refresh_epoch":null,"last_used":"2026-01-01T00:00:00Z","last_used_epoch":1767225600,"last_error":{"status":400,"error":"invalid_request","description":"Identity not found"},"consecutive_failures":1,"hits":0,"misses":1}]},{"identity":"object_id=11111111-2222-4333-8444-555555555555","selector":"object_id","id":"11111111-2222-4333-8444-555555555555","resources":[{"resource":"https://long.example/ééééééééééééééééééééééééééééééééééééééééééééééééééééé…","resource_bytes":301,"state":"failing","prefetch":false,"expires_on":null,"expires_at":null,"expires_in_seconds":null,"last_refresh":null,"last_refresh_epoch":null,"next_refresh":null,"next_refresh_epoch":null,"last_used":"2026-01-01T00:00:00Z","last_used_epoch":1767225600,"last_error":{"status":400,"error":"invalid_resource","description":null},"consecutive_failures":1,"hits":0,"misses":1}]},{"identity":"client_id=11111111-2222-4333-8444-555555555555","selector":"client_id","id":"11111111-2222-4333-8444-555555555555","resources":[{"resource":"https://management.azure.com/","state":"degraded","prefetch":false,"expires_on":1767226800,"expires_at":"2026-01-01T00:20:00Z","expires_in_seconds":598,"last_refresh":"2026-01-01T00:00:00Z","last_refresh_epoch":1767225600,"next_refresh":null,"next_refresh_epoch":null,"last_used":"2026-01-01T00:00:00Z","last_used_epoch":1767225600,"last_error":{"status":500,"error":"internal_error","description":null},"consecutive_failures":1,"hits":0,"misses":1}]}]})golden";

inline const char kGoldenBusyStatusFull[] = R"golden({"version":"9.8.7-\"rc\\1\"","now":"2026-01-01T00:10:02Z","start_time":"2026-01-01T00:00:00Z","start_time_epoch":1767225600,"uptime_seconds":602,"config_digest":"0123456789abcdef","listeners":["127.0.0.1:50342","[::1]:50342"],"ready":true,"reload":{"result":"none","time":null,"time_epoch":null,"error":null},"upstream":{"endpoint":"http://169.254.169.254/metadata/identity/oauth2/token","state":"failing","last_success":"2026-01-01T00:00:00Z","last_success_epoch":1767225600,"last_error":{"time":"2026-01-01T00:10:01Z","time_epoch":1767226201,"status":429,"error":"too_many_requests","description":null},"requests_total":6,"retries_total":2,"throttle_pauses_total":1,"latency_ms":{"p50":20.0,"p99":151368.0,"samples":6},"throttled_until":"2026-01-01T00:10:31Z","throttled_until_epoch":1767226231,"in_flight":0,"max_concurrent":3,"budget_in_use":0.0,"queue_depth":1,"queued_callers":1,"queued_background":0},"cache":{"keys":6,"hits":4,"misses":6,"coalesced":0,"waiters":2,"shed":0},"summary":{"ok":1,"refreshing":1,"degraded":1,"failing":3},"entries_total":6,"entries_shown":6,"truncated":false,"identities":[{"identity":"default","selector":"default","id":"","resources":[{"resource":"https://storage.azure.com/","state":"failing","prefetch":false,"expires_on":null,"expires_at":null,"expires_in_seconds":null,"last_refresh":null,"last_refresh_epoch":null,"next_refresh":null,"next_refresh_epoch":null,"last_used":"2026-01-01T00:10:01Z","last_used_epoch":1767226201,"last_error":{"status":429,"error":"too_many_requests","description":null},"consecutive_failures":1,"hits":0,"misses":1},{"resource":"https://refreshing.example/","state":"refreshing","prefetch":false,"expires_on":null,"expires_at":null,"expires_in_seconds":null,"last_refresh":null,"last_refresh_epoch":null,"next_refresh":null,"next_refresh_epoch":null,"last_used":"2026-01-01T00:10:01Z","last_used_epoch":1767226201,"last_error":null,"consecutive_failures":0,"hits":0,"misses":1},{"resource":"https://management.azure.com/","state":"ok","prefetch":false,"expires_on":1767312000,"expires_at":"2026-01-02T00:00:00Z","expires_in_seconds":85798,"last_refresh":"2026-01-01T00:00:00Z","last_refresh_epoch":1767225600,"next_refresh":"2026-01-01T23:47:30Z","next_refresh_epoch":1767311250,"last_used":"2026-01-01T00:01:00Z","last_used_epoch":1767225660,"last_error":null,"consecutive_failures":0,"hits":4,"misses":1}]},{"identity":"client_id=0d1e2f30-aaaa-4bbb-8ccc-123456789abc","selector":"client_id","id":"0d1e2f30-aaaa-4bbb-8ccc-123456789abc","resources":[{"resource":"https://vault.azure.net","state":"failing","prefetch":false,"expires_on":null,"expires_at":null,"expires_in_seconds":null,"last_refresh":null,"last_refresh_epoch":null,"next_refresh":null,"next_refresh_epoch":null,"last_used":"2026-01-01T00:00:00Z","last_used_epoch":1767225600,"last_error":{"status":400,"error":"invalid_request","description":"Identity not found"},"consecutive_failures":1,"hits":0,"misses":1}]},{"identity":"object_id=11111111-2222-4333-8444-555555555555","selector":"object_id","id":"11111111-2222-4333-8444-555555555555","resources":[{"resource":"https://long.example/éééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé","state":"failing","prefetch":false,"expires_on":null,"expires_at":null,"expires_in_seconds":null,"last_refresh":null,"last_refresh_epoch":null,"next_refresh":null,"next_refresh_epoch":null,"last_used":"2026-01-01T00:00:00Z","last_used_epoch":1767225600,"last_error":{"status":400,"error":"invalid_resource","description":null},"consecutive_failures":1,"hits":0,"misses":1}]},{"identity":"client_id=11111111-2222-4333-8444-555555555555","selector":"client_id","id":"11111111-2222-4333-8444-555555555555","resources":[{"resource":"https://management.azure.com/","state":"degraded","prefetch":false,"expires_on":1767226800,"expires_at":"2026-01-01T00:20:00Z","expires_in_seconds":598,"last_refresh":"2026-01-01T00:00:00Z","last_refresh_epoch":1767225600,"next_refresh":null,"next_refresh_epoch":null,"last_used":"2026-01-01T00:00:00Z","last_used_epoch":1767225600,"last_error":{"status":500,"error":"internal_error","description":null},"consecutive_failures":1,"hits":0,"misses":1}]}]})golden";

inline const char kGoldenBusyMetrics[] = R"golden(# HELP mi_agent_build_info Build information; the value is always 1.
# TYPE mi_agent_build_info gauge
mi_agent_build_info{version="9.8.7-\"rc\\1\"",revision="abc1234"} 1
# HELP mi_agent_ready 1 when the agent is ready (as /readyz answers 200), else 0.
# TYPE mi_agent_ready gauge
mi_agent_ready 1
# HELP mi_agent_process_start_time_seconds Start time of the process since the Unix epoch in seconds.
# TYPE mi_agent_process_start_time_seconds gauge
mi_agent_process_start_time_seconds 1767225600
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1767225600
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 0.25
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 8388608
# HELP process_virtual_memory_bytes Virtual memory size in bytes.
# TYPE process_virtual_memory_bytes gauge
process_virtual_memory_bytes 67108864
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 12
# HELP process_max_fds Maximum number of open file descriptors.
# TYPE process_max_fds gauge
process_max_fds 1024
# HELP mi_agent_requests_total Token requests answered, by route and HTTP status code.
# TYPE mi_agent_requests_total counter
mi_agent_requests_total{route="legacy",code="200"} 3
mi_agent_requests_total{route="legacy",code="400"} 1
mi_agent_requests_total{route="imds",code="200"} 1
mi_agent_requests_total{route="other",code="401"} 1
# HELP mi_agent_request_duration_seconds Time from a token request's arrival to its answer, by route and cache outcome (hit, miss, coalesced, none: answered without the cache).
# TYPE mi_agent_request_duration_seconds histogram
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="0.0001"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="0.00025"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="0.0005"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="0.001"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="0.0025"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="0.005"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="0.01"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="0.025"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="0.05"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="0.1"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="0.25"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="0.5"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="1"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="2.5"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="5"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="10"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="25"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="none",le="+Inf"} 1
mi_agent_request_duration_seconds_sum{route="legacy",cache="none"} 0
mi_agent_request_duration_seconds_count{route="legacy",cache="none"} 1
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="0.0001"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="0.00025"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="0.0005"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="0.001"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="0.0025"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="0.005"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="0.01"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="0.025"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="0.05"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="0.1"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="0.25"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="0.5"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="1"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="2.5"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="5"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="10"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="25"} 3
mi_agent_request_duration_seconds_bucket{route="legacy",cache="hit",le="+Inf"} 3
mi_agent_request_duration_seconds_sum{route="legacy",cache="hit"} 0
mi_agent_request_duration_seconds_count{route="legacy",cache="hit"} 3
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="0.0001"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="0.00025"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="0.0005"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="0.001"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="0.0025"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="0.005"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="0.01"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="0.025"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="0.05"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="0.1"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="0.25"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="0.5"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="1"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="2.5"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="5"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="10"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="25"} 1
mi_agent_request_duration_seconds_bucket{route="imds",cache="hit",le="+Inf"} 1
mi_agent_request_duration_seconds_sum{route="imds",cache="hit"} 0
mi_agent_request_duration_seconds_count{route="imds",cache="hit"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="0.0001"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="0.00025"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="0.0005"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="0.001"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="0.0025"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="0.005"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="0.01"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="0.025"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="0.05"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="0.1"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="0.25"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="0.5"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="1"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="2.5"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="5"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="10"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="25"} 1
mi_agent_request_duration_seconds_bucket{route="other",cache="none",le="+Inf"} 1
mi_agent_request_duration_seconds_sum{route="other",cache="none"} 0
mi_agent_request_duration_seconds_count{route="other",cache="none"} 1
# HELP mi_agent_cache_hits_total Token requests served from the cache.
# TYPE mi_agent_cache_hits_total counter
mi_agent_cache_hits_total 4
# HELP mi_agent_cache_misses_total Token requests that waited for IMDS.
# TYPE mi_agent_cache_misses_total counter
mi_agent_cache_misses_total 6
# HELP mi_agent_cache_coalesced_total Misses that joined an IMDS request already under way.
# TYPE mi_agent_cache_coalesced_total counter
mi_agent_cache_coalesced_total 0
# HELP mi_agent_cache_negative_hits_total Requests answered from a cached IMDS rejection.
# TYPE mi_agent_cache_negative_hits_total counter
mi_agent_cache_negative_hits_total 0
# HELP mi_agent_cache_evictions_total Keys dropped from the cache, by reason.
# TYPE mi_agent_cache_evictions_total counter
mi_agent_cache_evictions_total{reason="idle"} 0
mi_agent_cache_evictions_total{reason="lru"} 0
# HELP mi_agent_cache_keys Keys (identity and resource) in the cache.
# TYPE mi_agent_cache_keys gauge
mi_agent_cache_keys 6
# HELP mi_agent_waiters Callers waiting for an IMDS answer.
# TYPE mi_agent_waiters gauge
mi_agent_waiters 2
# HELP mi_agent_requests_shed_total Callers answered 429 because the agent was shedding load.
# TYPE mi_agent_requests_shed_total counter
mi_agent_requests_shed_total 0
# HELP mi_agent_requests_deadline_expired_total Callers answered at their deadline without a token.
# TYPE mi_agent_requests_deadline_expired_total counter
mi_agent_requests_deadline_expired_total 0
# HELP mi_agent_upstream_requests_total IMDS requests finished, by HTTP status class (error: no HTTP answer).
# TYPE mi_agent_upstream_requests_total counter
mi_agent_upstream_requests_total{class="error"} 0
mi_agent_upstream_requests_total{class="1xx"} 0
mi_agent_upstream_requests_total{class="2xx"} 2
mi_agent_upstream_requests_total{class="3xx"} 0
mi_agent_upstream_requests_total{class="4xx"} 3
mi_agent_upstream_requests_total{class="5xx"} 1
# HELP mi_agent_upstream_retries_total IMDS requests retried after a failure.
# TYPE mi_agent_upstream_retries_total counter
mi_agent_upstream_retries_total 2
# HELP mi_agent_upstream_throttle_pauses_total Times IMDS throttled the agent (429) and upstream requests paused.
# TYPE mi_agent_upstream_throttle_pauses_total counter
mi_agent_upstream_throttle_pauses_total 1
# HELP mi_agent_upstream_same_token_total Refreshes for which IMDS returned the token already cached.
# TYPE mi_agent_upstream_same_token_total counter
mi_agent_upstream_same_token_total 0
# HELP mi_agent_upstream_up 1 unless the last IMDS answer was a failure.
# TYPE mi_agent_upstream_up gauge
mi_agent_upstream_up 0
# HELP mi_agent_tokens Cache keys by state (ok, refreshing, degraded, failing).
# TYPE mi_agent_tokens gauge
mi_agent_tokens{state="ok"} 1
mi_agent_tokens{state="refreshing"} 1
mi_agent_tokens{state="degraded"} 1
mi_agent_tokens{state="failing"} 3
# HELP mi_agent_token_earliest_expiry_seconds Seconds until the earliest cached token expires (negative: already expired).
# TYPE mi_agent_token_earliest_expiry_seconds gauge
mi_agent_token_earliest_expiry_seconds 597.356
# HELP mi_agent_upstream_latency_seconds IMDS request latency in seconds.
# TYPE mi_agent_upstream_latency_seconds histogram
mi_agent_upstream_latency_seconds_bucket{le="0.001"} 1
mi_agent_upstream_latency_seconds_bucket{le="0.0025"} 1
mi_agent_upstream_latency_seconds_bucket{le="0.005"} 2
mi_agent_upstream_latency_seconds_bucket{le="0.01"} 3
mi_agent_upstream_latency_seconds_bucket{le="0.025"} 4
mi_agent_upstream_latency_seconds_bucket{le="0.05"} 5
mi_agent_upstream_latency_seconds_bucket{le="0.1"} 5
mi_agent_upstream_latency_seconds_bucket{le="0.25"} 5
mi_agent_upstream_latency_seconds_bucket{le="0.5"} 5
mi_agent_upstream_latency_seconds_bucket{le="1"} 5
mi_agent_upstream_latency_seconds_bucket{le="2.5"} 5
mi_agent_upstream_latency_seconds_bucket{le="10"} 5
mi_agent_upstream_latency_seconds_bucket{le="+Inf"} 6
mi_agent_upstream_latency_seconds_sum 151.441
mi_agent_upstream_latency_seconds_count 6
# HELP mi_agent_upstream_in_flight IMDS requests in flight.
# TYPE mi_agent_upstream_in_flight gauge
mi_agent_upstream_in_flight 0
# HELP mi_agent_upstream_max_concurrent The IMDS budget's cap on concurrent requests.
# TYPE mi_agent_upstream_max_concurrent gauge
mi_agent_upstream_max_concurrent 3
# HELP mi_agent_upstream_queue_depth IMDS requests waiting for the budget, by priority.
# TYPE mi_agent_upstream_queue_depth gauge
mi_agent_upstream_queue_depth{priority="caller"} 1
mi_agent_upstream_queue_depth{priority="background"} 0
# HELP mi_agent_upstream_queue_rejected_total IMDS requests refused because the queue was full.
# TYPE mi_agent_upstream_queue_rejected_total counter
mi_agent_upstream_queue_rejected_total 0
# HELP mi_agent_upstream_pause_remaining_seconds Seconds until a throttle pause ends (0: not paused).
# TYPE mi_agent_upstream_pause_remaining_seconds gauge
mi_agent_upstream_pause_remaining_seconds 28.766
# HELP mi_agent_open_connections Open client connections, by listener.
# TYPE mi_agent_open_connections gauge
mi_agent_open_connections{listener="token"} 0
mi_agent_open_connections{listener="health"} 0
# HELP mi_agent_connections_accepted_total Client connections accepted, by listener.
# TYPE mi_agent_connections_accepted_total counter
mi_agent_connections_accepted_total{listener="token"} 0
mi_agent_connections_accepted_total{listener="health"} 0
# HELP mi_agent_connections_rejected_total Client connections refused at the connection limit (503), by listener.
# TYPE mi_agent_connections_rejected_total counter
mi_agent_connections_rejected_total{listener="token"} 0
mi_agent_connections_rejected_total{listener="health"} 0
# HELP mi_agent_connections_timed_out_total Client connections closed by the header or idle timeout, by listener.
# TYPE mi_agent_connections_timed_out_total counter
mi_agent_connections_timed_out_total{listener="token"} 0
mi_agent_connections_timed_out_total{listener="health"} 0
# HELP mi_agent_http_protocol_errors_total Requests refused as malformed or too large (400, 413, 431, 505), by listener.
# TYPE mi_agent_http_protocol_errors_total counter
mi_agent_http_protocol_errors_total{listener="token"} 0
mi_agent_http_protocol_errors_total{listener="health"} 0
)golden";
