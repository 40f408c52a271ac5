"""Celery workers: bulk catalog ingestion through a queue."""
