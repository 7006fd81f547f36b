"""``/v1/jobs``: the ingestion jobs of the tenant: list, progress, cancel."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_response

from opentier.gateway import rpc
from opentier.gateway.errors import documented_errors
from opentier.gateway.principal import require
from opentier.gateway.routes.context import caller, host_client
from opentier.gateway.schemas.common import next_token
from opentier.gateway.schemas.jobs import JOB_STATUS, Job, JobList, JobListQuery
from opentier.generated.intelligence.v1 import collections_pb2, ingest_pb2

blueprint = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
TAGS = ["Ingestion jobs"]


@blueprint.get("")
@require("read")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 500, 503)
@validate_querystring(JobListQuery)
@validate_response(JobList)
async def list_jobs(query_args: JobListQuery) -> JobList:
    """List ingestion jobs, newest first, optionally of one collection or in some statuses (scope `read`).

    A `collection_id` that names no collection of yours is 404, as on the collection's own routes.
    """
    client, who = host_client(), caller()
    if query_args.collection_id:
        # The host filters silently; say "not found" instead, so a mistyped id is not an empty list.
        await client.unary(
            rpc.GET_COLLECTION,
            collections_pb2.GetCollectionRequest(collection_id=query_args.collection_id),
            who,
        )
    message = ingest_pb2.ListJobsRequest(
        page=query_args.to_pb(),
        collection_id=query_args.collection_id or "",
        statuses=[JOB_STATUS[status] for status in query_args.status or ()],
    )
    response = await client.unary(rpc.LIST_JOBS, message, who)
    return JobList(
        jobs=[Job.from_pb(item) for item in response.jobs], next_page_token=next_token(response.page)
    )


@blueprint.get("/<job_id>")
@require("read")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 500, 503)
@validate_response(Job)
async def get_job(job_id: str) -> Job:
    """One job: its status, per-document counts and progress (scope `read`)."""
    message = ingest_pb2.GetJobRequest(job_id=job_id)
    return Job.from_pb(await host_client().unary(rpc.GET_JOB, message, caller()))


@blueprint.post("/<job_id>/cancel")
@require("ingest")
@tag(TAGS)
@documented_errors(400, 401, 403, 404, 500, 503)
@validate_response(Job)
async def cancel_job(job_id: str) -> Job:
    """Stop a queued or running job; the documents already stored stay (scope `ingest`)."""
    message = ingest_pb2.CancelJobRequest(job_id=job_id)
    return Job.from_pb(await host_client().unary(rpc.CANCEL_JOB, message, caller()))
