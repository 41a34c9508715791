"""Provider endpoint calls on behalf of the API (validate-connection, inventory, options)."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity

from activities import names
from activities.failures import to_application_error
from activities.services import Services
from core.errors import InvalidInput, SternaError
from core.models import CHANGE_TRACKING
from providers.base import (
    DestinationOptionsProvider,
    EndpointProvider,
    ImportProvider,
    InstancesProvider,
    NetworksProvider,
    SourceOptionsProvider,
    StorageProvider,
)
from workflows.types import EndpointCall


class EndpointActivities:
    def __init__(self, services: Services) -> None:
        self.services = services

    @activity.defn(name=names.ENDPOINT_CALL)
    async def call(self, call: EndpointCall) -> Any:
        try:
            return await asyncio.to_thread(self._run, call)
        except SternaError as exc:
            raise to_application_error(exc) from exc

    def _run(self, call: EndpointCall) -> Any:
        store = self.services.store
        endpoint = store.get_endpoint(None, call.endpoint_id)
        from providers.registry import get_provider, provider_class

        if call.operation == "delete_replica_disks":
            from providers.replica_store import StoredReplicas, delete_transfer

            if issubclass(provider_class(endpoint.type), StoredReplicas):
                # Sterna's own files: no credentials to resolve (a migration's trust may be gone by now).
                return delete_transfer(call.instance or "")
        info = self.services.resolve(endpoint.type, store.connection_info(call.endpoint_id), call.trust_id)

        op = call.operation
        if op == "validate":
            get_provider(endpoint.type, info, EndpointProvider).validate_connection()
            return {"valid": True}
        if op == "check_destination_environment":
            env = dict(call.env)
            network_map = env.pop("network_map", None) or {}
            get_provider(endpoint.type, info, ImportProvider).check_destination_environment(env, network_map)
            return {"valid": True}
        if op == "list_instances":
            inventory = get_provider(endpoint.type, info, InstancesProvider)
            return [i.model_dump(mode="json") for i in inventory.list_instances(call.env, call.name_filter)]
        if op == "get_instance":
            inventory = get_provider(endpoint.type, info, InstancesProvider)
            return inventory.get_instance(call.env, call.instance or "").model_dump(mode="json")
        if op == "list_networks":
            return [n.model_dump(mode="json") for n in
                    get_provider(endpoint.type, info, NetworksProvider).list_networks(call.env)]
        if op == "list_storage":
            return get_provider(endpoint.type, info, StorageProvider).list_storage(call.env).model_dump(mode="json")
        if op == "destination_options":
            dest = get_provider(endpoint.type, info, DestinationOptionsProvider)
            return [o.model_dump(mode="json") for o in dest.destination_options(call.env)]
        if op == "source_options":
            source = get_provider(endpoint.type, info, SourceOptionsProvider)
            return [o.model_dump(mode="json") for o in source.source_options(call.env)]
        if op == "delete_replica_disks":
            from providers.base import BaseProvider, ReplicaProvider, SnapshotReplicaProvider

            replicas = get_provider(endpoint.type, info, BaseProvider)
            if not isinstance(replicas, (ReplicaProvider, SnapshotReplicaProvider)):
                raise InvalidInput(f"Provider '{endpoint.type}' holds no replica disks")
            return replicas.delete_replica_disks(call.env, call.instance or "")
        if op == "release_change_tracking":
            from providers.base import BaseProvider, ChangeTrackingSource

            tracked = get_provider(endpoint.type, info, BaseProvider)
            # The API names the transfer in the call's environment (where a snapshot's step used to find it).
            env = {k: v for k, v in call.env.items() if k != CHANGE_TRACKING}
            transfer = call.env.get(CHANGE_TRACKING)
            if not isinstance(tracked, ChangeTrackingSource) or not transfer:
                return []
            return tracked.release_tracking(env, call.instance or "", str(transfer))
        raise InvalidInput(f"Unknown endpoint operation '{op}'")
