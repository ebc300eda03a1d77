-- ${trade_is_valid}: the rules of marketpulse/trade.py (parse_trade) as one Flink SQL condition on a Kafka
-- record's raw `value` and the JSON text of each field (the source table's f_* columns). Every script's
-- WATERMARK clause and its checked_trades view use it, so only valid trades move event time; the constants
-- (${trade_*}) come from marketpulse/trade.py through marketpulse/sqltemplate.py, written nowhere else.
-- Valid: UTF-8 of at most the payload limit without surrogate escapes, one JSON object and nothing after it
-- (a valid record has exactly one '}'); trade_id and symbol by their patterns; price a number in
-- (0, MAX_PRICE]; size an integer in [1, MAX_SIZE]; side one of SIDES; event_time an integer in
-- [0, MAX_EVENT_TIME_MS]; exactly these six keys, each once. Not valid: everything else, a tombstone (NULL
-- value) and anything that is not a JSON object included. tests/local/test_sql_validity.py holds it to
-- parse_trade record for record on the hostile corpus.
COALESCE(
        CAST(CAST(`value` AS STRING) AS BYTES) = `value`
        AND CHAR_LENGTH(CAST(`value` AS STRING)) <= ${trade_max_payload_bytes}
        AND REGEXP(CAST(`value` AS STRING), '\}[ \t\n\r]*\z')
        AND CHAR_LENGTH(REPLACE(CAST(`value` AS STRING), '}', '')) = CHAR_LENGTH(CAST(`value` AS STRING)) - 1
        AND NOT REGEXP(CAST(`value` AS STRING), '\\u[dD][89a-fA-F]')
        AND REGEXP(f_trade_id, '^\["${trade_id_pattern}"\]\z')
        AND REGEXP(f_symbol, '^\["${trade_symbol_pattern}"\]\z')
        AND TRY_CAST(REGEXP_EXTRACT(f_price, '^\[(-?[0-9][0-9.eE+\-]*)\]\z', 1) AS DOUBLE)
            BETWEEN 4.9E-324 AND ${trade_max_price}
        AND REGEXP(f_size, '^\[${trade_size_pattern}\]\z')
        AND f_side IN (${trade_sides_json})
        AND TRY_CAST(REGEXP_EXTRACT(f_event_time, '^\[${trade_event_time_pattern}\]\z', 1) AS BIGINT)
            <= ${trade_max_event_time_ms}
        AND CHAR_LENGTH(f_all) = 52 + CHAR_LENGTH(f_trade_id) + CHAR_LENGTH(f_symbol) + CHAR_LENGTH(f_price)
                                 + CHAR_LENGTH(f_size) + CHAR_LENGTH(f_side) + CHAR_LENGTH(f_event_time)
        AND CHAR_LENGTH(REPLACE(CAST(`value` AS STRING), '"trade_id"', '')) = CHAR_LENGTH(CAST(`value` AS STRING)) - 10
        AND CHAR_LENGTH(REPLACE(CAST(`value` AS STRING), '"symbol"', '')) = CHAR_LENGTH(CAST(`value` AS STRING)) - 8
        AND CHAR_LENGTH(REPLACE(CAST(`value` AS STRING), '"price"', '')) = CHAR_LENGTH(CAST(`value` AS STRING)) - 7
        AND CHAR_LENGTH(REPLACE(CAST(`value` AS STRING), '"size"', '')) = CHAR_LENGTH(CAST(`value` AS STRING)) - 6
        AND CHAR_LENGTH(REPLACE(CAST(`value` AS STRING), '"side"', '')) = CHAR_LENGTH(CAST(`value` AS STRING)) - 6
        AND CHAR_LENGTH(REPLACE(CAST(`value` AS STRING), '"event_time"', '')) = CHAR_LENGTH(CAST(`value` AS STRING)) - 12,
        FALSE)
