"""Stores a LoRA adapter directory as a ZenML model artifact (works on any artifact store)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from zenml.enums import ArtifactType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from mbad.adapters import AdapterDirectory, read_adapter_meta


class AdapterMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (AdapterDirectory,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def save(self, data: AdapterDirectory) -> None:
        for file in sorted(Path(data.path).iterdir()):
            if file.is_file():
                fileio.copy(str(file), os.path.join(self.uri, file.name), overwrite=True)

    def load(self, data_type: type[Any]) -> AdapterDirectory:
        local = Path(tempfile.mkdtemp(prefix="mbad-adapter-"))
        for name in fileio.listdir(self.uri):
            name = os.path.basename(str(name))
            fileio.copy(os.path.join(self.uri, name), str(local / name), overwrite=True)
        return AdapterDirectory(str(local))

    def extract_metadata(self, data: AdapterDirectory) -> dict[str, Any]:
        summary = read_adapter_meta(Path(data.path)).get("summary", {})
        return {key: summary[key] for key in ("steps", "examples", "tokens", "final_loss") if key in summary}
