#!/bin/sh
# /docker-entrypoint.sh of the image: the Flink Kubernetes Operator's JobManager and TaskManager pods start
# through it (kubernetes.entry.path). What it does and why: stack/kubernetes.py. docker-compose never runs it.
exec python -m stack.kubernetes "$@"
