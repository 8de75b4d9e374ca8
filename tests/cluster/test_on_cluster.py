"""A focused set of the stream tests, run again against a real 3-master Redis Cluster (see
``conftest.py`` here): uploads, resumes, takeovers across processes, completion retries, the
sweeper, tus over HTTP and the state scripts the engine drives. Each is the test of the same
name elsewhere; only the Redis differs."""

from tests.durability.test_completion_retry import (
    test_a_failed_handler_runs_again_on_resume_until_it_succeeds,
)
from tests.durability.test_sweeper import (
    test_periodic_sweeper_deletes_a_stream_past_its_expiry,
    test_sweep_removes_exactly_the_dead_streams,
)
from tests.durability.test_takeover import (
    test_lease_of_a_killed_owner_expires,
    test_resume_takes_over_a_stalled_stream,
)
from tests.engine.test_engine import (
    test_concatenation_of_partial_streams,
    test_create_append_at_offsets_status_finish_and_read,
    test_deferred_length,
    test_terminate_stops_an_open_window_and_deletes_the_stream,
)
from tests.http.test_tus import test_create_head_patch_in_pieces_and_complete
from tests.server.test_streams import (
    test_client_drop_keeps_durable_prefix_for_resume,
    test_resume_of_complete_stream_repeats_completion,
    test_upload_completes_with_checksum_and_stored_file,
)

__all__ = [
    "test_a_failed_handler_runs_again_on_resume_until_it_succeeds",
    "test_client_drop_keeps_durable_prefix_for_resume",
    "test_concatenation_of_partial_streams",
    "test_create_append_at_offsets_status_finish_and_read",
    "test_create_head_patch_in_pieces_and_complete",
    "test_deferred_length",
    "test_lease_of_a_killed_owner_expires",
    "test_periodic_sweeper_deletes_a_stream_past_its_expiry",
    "test_resume_of_complete_stream_repeats_completion",
    "test_resume_takes_over_a_stalled_stream",
    "test_sweep_removes_exactly_the_dead_streams",
    "test_terminate_stops_an_open_window_and_deletes_the_stream",
    "test_upload_completes_with_checksum_and_stored_file",
]
