"""A job's deliveries, as the dispatcher writes them and a delivery process reads them back."""

from rq.serializers import JSONSerializer

from worker.job_data import JobDataSerializer


def test_what_orjson_refuses_still_travels_in_a_job():
    """An event holding a lone surrogate or an integer past 64 bits is read back as it was written."""
    deliveries = [{"id": "d1", "body": {"name": "bad \udc80 text", "count": 2**70, "price": 1.5}, "event_ids": ["e1"]}]
    assert JobDataSerializer.loads(JobDataSerializer.dumps(deliveries)) == deliveries


def test_jobs_queued_by_rqs_json_serializer_read_the_same():
    """Jobs queued before the change (RQ's JSONSerializer) are read as they were written, and the other way round."""
    job = ("worker.jobs.forward_deliveries", None, [[{"id": "d1", "body": {"name": "Ünïcode"}, "event_ids": ["e1"]}]], {})
    assert JobDataSerializer.loads(JSONSerializer.dumps(job)) == JSONSerializer.loads(JSONSerializer.dumps(job))
    assert JSONSerializer.loads(JobDataSerializer.dumps(job)) == JobDataSerializer.loads(JobDataSerializer.dumps(job))
