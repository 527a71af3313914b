"""Seed 003 NodeService tests (unit: the repository, monitor and validator are mocks)."""

from __future__ import annotations

from unittest.mock import AsyncMock

import pytest

from lucid.node.errors import InvalidNodeStatusError, NodeNotFoundError, ValidationError
from lucid.node.models.node_models import Node, NodeCreateRequest
from lucid.node.services import NodeService
from tests.fixtures.node_fixtures import sample_hardware_info, sample_node_create_request, sample_node_data


class TestNodeService:
    @pytest.fixture
    async def node_service(self):
        mock_repository = AsyncMock()
        mock_resource_monitor = AsyncMock()
        mock_validator = AsyncMock()
        service = NodeService(node_repository=mock_repository, resource_monitor=mock_resource_monitor,
                              validator=mock_validator)
        return service, mock_repository, mock_resource_monitor, mock_validator

    async def test_create_node_success(self, node_service):
        service, mock_repo, mock_monitor, mock_validator = node_service
        mock_validator.validate_create_request.return_value = None
        mock_repo.create.return_value = None
        mock_monitor.initialize_node.return_value = None
        request = NodeCreateRequest(name="test-node-001", node_type="worker", hardware_info=sample_hardware_info(),
                                    location={"country": "US", "region": "CA"}, initial_pool_id="pool_workers",
                                    configuration={"max_sessions": 10})
        result = await service.create_node(request)
        assert result.name == "test-node-001"
        assert result.node_type == "worker"
        assert result.status == "inactive"
        assert result.pool_id == "pool_workers"
        mock_validator.validate_create_request.assert_called_once_with(request)
        mock_repo.create.assert_called_once()
        mock_monitor.initialize_node.assert_called_once()

    async def test_create_node_validation_failure(self, node_service):
        service, mock_repo, mock_monitor, mock_validator = node_service
        mock_validator.validate_create_request.side_effect = ValidationError("Invalid hardware info")
        with pytest.raises(ValidationError):
            await service.create_node(sample_node_create_request())
        mock_repo.create.assert_not_called()
        mock_monitor.initialize_node.assert_not_called()

    async def test_get_node_success(self, node_service):
        service, mock_repo, _, mock_validator = node_service
        expected_node = Node(**sample_node_data())
        mock_validator.validate_node_id.return_value = None
        mock_repo.get_by_id.return_value = expected_node
        result = await service.get_node("node_test_001")
        assert result == expected_node
        mock_validator.validate_node_id.assert_called_once_with("node_test_001")
        mock_repo.get_by_id.assert_called_once_with("node_test_001")

    async def test_get_node_not_found(self, node_service):
        service, mock_repo, _, mock_validator = node_service
        mock_validator.validate_node_id.return_value = None
        mock_repo.get_by_id.return_value = None
        with pytest.raises(NodeNotFoundError) as exc:
            await service.get_node("node_nonexistent")
        assert exc.value.error_code == "LUCID_ERR_5001"

    async def test_start_node_success(self, node_service):
        service, mock_repo, mock_monitor, _ = node_service
        existing_node = Node(**sample_node_data())
        existing_node.status = "inactive"
        mock_repo.get_by_id.return_value = existing_node
        mock_repo.update.return_value = None
        mock_monitor.start_monitoring.return_value = None
        result = await service.start_node("node_test_001")
        assert result["node_id"] == "node_test_001"
        assert result["status"] == "active"
        assert "started_at" in result
        assert existing_node.status == "active"
        assert existing_node.last_heartbeat is not None
        mock_monitor.start_monitoring.assert_called_once_with("node_test_001")
        assert mock_repo.update.call_count == 2  # once for starting, once for active

    async def test_start_node_already_active(self, node_service):
        service, mock_repo, mock_monitor, _ = node_service
        existing_node = Node(**sample_node_data())
        existing_node.status = "active"
        mock_repo.get_by_id.return_value = existing_node
        result = await service.start_node("node_test_001")
        assert result["status"] == "active"
        assert result["message"] == "Node is already active"
        mock_monitor.start_monitoring.assert_not_called()

    async def test_start_node_invalid_status(self, node_service):
        service, mock_repo, _, _ = node_service
        existing_node = Node(**sample_node_data())
        existing_node.status = "error"
        mock_repo.get_by_id.return_value = existing_node
        with pytest.raises(InvalidNodeStatusError) as exc:
            await service.start_node("node_test_001")
        assert exc.value.error_code == "LUCID_ERR_5003"

    async def test_start_failure_leaves_error(self, node_service):
        """SPEC: a failure mid-transition leaves ``error``."""
        service, mock_repo, mock_monitor, _ = node_service
        node = Node(**sample_node_data())
        node.status = "inactive"
        mock_repo.get_by_id.return_value = node
        mock_monitor.start_monitoring.side_effect = RuntimeError("monitor down")
        with pytest.raises(RuntimeError):
            await service.start_node("node_test_001")
        assert node.status == "error"
        assert mock_repo.update.call_args_list[-1].args[0].status == "error"

    async def test_stop_transitions(self, node_service):
        service, mock_repo, mock_monitor, _ = node_service
        node = Node(**sample_node_data())
        mock_repo.get_by_id.return_value = node
        result = await service.stop_node("node_test_001")
        assert result["status"] == "inactive" and "stopped_at" in result
        statuses = [c.kwargs.get("expected_status") for c in mock_repo.update.call_args_list]
        assert statuses == ["active", "stopping"]
        mock_monitor.stop_monitoring.assert_called_once_with("node_test_001")
        again = await service.stop_node("node_test_001")
        assert again["message"] == "Node is already inactive"

    async def test_stop_invalid_status(self, node_service):
        service, mock_repo, _, _ = node_service
        node = Node(**sample_node_data())
        node.status = "maintenance"
        mock_repo.get_by_id.return_value = node
        with pytest.raises(InvalidNodeStatusError):
            await service.stop_node("node_test_001")

    async def test_concurrent_change_detected(self, node_service):
        """The repository's compare-and-set said no: the service must not pretend it started."""
        service, mock_repo, mock_monitor, _ = node_service
        node = Node(**sample_node_data())
        node.status = "inactive"
        mock_repo.get_by_id.return_value = node
        mock_repo.update.return_value = False
        with pytest.raises(InvalidNodeStatusError):
            await service.start_node("node_test_001")
        mock_monitor.start_monitoring.assert_not_called()

    async def test_list_nodes_with_pagination(self, node_service):
        service, mock_repo, _, _ = node_service
        mock_repo.list.return_value = [Node(**sample_node_data()) for _ in range(3)]
        mock_repo.count.return_value = 50
        result = await service.list_nodes(page=2, limit=10, status="active")
        assert len(result["nodes"]) == 3
        assert result["pagination"] == {"page": 2, "limit": 10, "total": 50, "pages": 5}
        mock_repo.list.assert_called_once_with(offset=10, limit=10, status="active", pool_id=None)
        mock_repo.count.assert_called_once_with(status="active", pool_id=None)
