"""The pipeline stages. Each module names its input rows, output rows and idempotency rule.

Stages never import FastAPI, Celery or another stage; only workers/tasks.py knows their order.
"""
