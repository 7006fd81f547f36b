"""A health probe for the host through the standard ``grpc.health.v1`` service (no token)."""

from __future__ import annotations

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

#: Returned when no health answer came back (nothing listening, or no answer within the timeout).
UNREACHABLE = "UNREACHABLE"


async def check_health(target: str, timeout: float, *, service: str = "") -> str:  # noqa: ASYNC109
    """The serving status name ("SERVING", "NOT_SERVING", ...) of ``service`` at ``target``.

    Returns :data:`UNREACHABLE` when the host cannot be reached in ``timeout`` seconds, and
    "SERVICE_UNKNOWN" when the host does not serve ``service``.
    """
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError as err:
            if err.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}:
                return UNREACHABLE
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            raise
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name
