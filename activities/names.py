"""The activities' names on the wire: workflows schedule them by these, workers register them.

Workflows import this module inside the sandbox, so it stays stdlib-only and free of the
activity code (which loads providers and the record store). A name is part of every
history that scheduled it: never change one, add a new activity instead.
"""

from __future__ import annotations

from typing import Final

# activities.steps.MigrationActivities: one per migration step
VALIDATE_INSTANCE: Final = "validate_instance"
SNAPSHOT_INSTANCE: Final = "snapshot_instance"
EXPORT_DISK: Final = "export_disk"
OS_MORPHING: Final = "os_morphing"
CONVERT_DISK: Final = "convert_disk"
UPLOAD_DISK: Final = "upload_disk"
DEPLOY_INSTANCE: Final = "deploy_instance"
CLEANUP_INSTANCE: Final = "cleanup_instance"
#: the source snapshot of a host that died for good, before the VM starts again elsewhere
RELEASE_SNAPSHOT: Final = "release_snapshot"
#: answered on a host's probe queue by its worker while it lives (``workflows.hosts``)
HOST_ALIVE: Final = "host_alive"

# activities.outcomes.RecordActivities: outcomes only the workflow knows
RECORD_TASK: Final = "record_task"
RECORD_UNFINISHED_TASKS: Final = "record_unfinished_tasks"
RECORD_MIGRATION_STATUS: Final = "record_migration_status"

# activities.trusts.TrustActivities
RELEASE_MIGRATION_TRUST: Final = "release_migration_trust"

# activities.endpoint.EndpointActivities
ENDPOINT_CALL: Final = "endpoint_call"

# activities.transfers.TransferActivities: transfers and deployments only (every other step
# of theirs is a migration activity above, called with the transfer's task names)
BEGIN_TRANSFER_EXECUTION: Final = "begin_transfer_execution"
REPLICATE_DISK: Final = "replicate_disk"
FINISH_TRANSFER_EXECUTION: Final = "finish_transfer_execution"
BEGIN_DEPLOYMENT: Final = "begin_deployment"
CREATE_REPLICA_OVERLAY: Final = "create_replica_overlay"
CREATE_AUTO_DEPLOYMENT: Final = "create_auto_deployment"
