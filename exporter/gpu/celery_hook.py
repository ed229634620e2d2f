# Compatibility: users' workers run `celery worker --include exporter.gpu.celery_hook`;
# the hook itself is lensing_sources.gpu.celery_hook.
from lensing_sources.gpu.celery_hook import *  # noqa: F403
