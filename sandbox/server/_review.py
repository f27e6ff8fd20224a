"""Thin gRPC servicer of human review (stewards list held jobs and decide)."""

from __future__ import annotations

from typing import Any

import grpc

from sandbox import _wire as wire
from sandbox._app import Sandbox
from sandbox.api.v1 import review_pb2, review_pb2_grpc
from sandbox.server._auth import current_principal
from sandbox.server._status import rpc


class ReviewServicer(review_pb2_grpc.ReviewServiceServicer):  # type: ignore[misc]
    def __init__(self, app: Sandbox) -> None:
        self.app = app

    @rpc
    def ListPendingReviews(
        self, request: Any, context: Any
    ) -> review_pb2.ListPendingReviewsResponse:
        pending = self.app.jobs.pending_reviews(current_principal())
        return review_pb2.ListPendingReviewsResponse(
            reviews=[
                review_pb2.PendingReview(
                    job=wire.job_to_pb(info),
                    why=list(hold.why),
                    approvals_required=hold.required,
                    approved_by=list(hold.approvals),
                )
                for info, hold in pending
            ]
        )

    @rpc
    def DecideReview(self, request: Any, context: Any) -> Any:
        info = self.app.jobs.decide_review(
            current_principal(), request.job_id, request.approve, request.reason
        )
        return wire.job_to_pb(info)


def add_review_service(server: grpc.Server, app: Sandbox) -> None:
    review_pb2_grpc.add_ReviewServiceServicer_to_server(ReviewServicer(app), server)
