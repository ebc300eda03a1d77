"""MarketPulse alert service: `python -m alerts` turns the `anomalies` topic into alerts.

It consumes the anomalies the DataStream job writes to Kafka (settings.kafka.anomalies_topic; JSON, epoch-ms
times, at-least-once with the dedup key (trade_id, rule)), and the Flink SQL job's indicator alert rules in
the same shape (sql/indicators.sql, marketpulse/alert_rules.py), and, for each anomaly in topic order, decides
(alerts/policy.py, pure):

    repeat     (trade_id, rule) already has a decision: skipped, never delivered twice;
    alert      first of its (symbol, rule), or at least alerts.cooldown_seconds of EVENT time after the last
               alert of that (symbol, rule): sent to every configured channel (log, webhook, slack);
    suppress   within the cooldown, or stale (event time more than alerts.max_age_seconds before the wall
               clock when it is read, e.g. the demo's history): recorded, not sent.

Every decision is a row of alert_decisions (db/schema/006_alerts.sql), primary key (trade_id, rule);
undeliverable alerts also get a row per failed channel in alert_dead_letters, with the payload and the reason.

Delivery contract
-----------------
* Per alert, in this order: POST to each HTTP channel (retries with exponential backoff), write the log line,
  store the decision row (one transaction), and after the whole batch commit the Kafka offsets. A restart
  resumes from the committed offsets; records read again find their decision row and are skipped, so
  nothing is lost and a stored decision is never acted on twice.
* The webhooks are at-least-once: every POST carries `Idempotency-Key: <trade_id>:<rule>` (also the body's
  `id`), the same on every retry. A crash (kill -9, power loss) after a POST succeeded and before its
  decision row is stored repeats that one POST on restart; receivers that need exactly-once drop repeats by
  that key. A crash during a POST's retries repeats it the same way. Nothing else is repeated.
* Cooldowns are measured in event time and start at every alert, delivered or dead, so a replay of the topic
  or a restart mid-stream makes the same decisions (given the topic's order, which Kafka keeps per
  partition; the job keys anomalies by symbol).
* Kafka or PostgreSQL down: the service logs one line, waits with backoff and carries on; a webhook that
  stays unreachable or failing after its retries gives a dead letter, and the stream goes on.
* One instance per consumer group (alerts.consumer_group): the cooldown state is kept in memory and loaded
  from alert_decisions at start.
"""
