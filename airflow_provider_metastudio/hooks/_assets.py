"""The digital-asset calls of :class:`~airflow_provider_metastudio.hooks.metastudio.MetaStudioHook`
(read an asset, list the library, download a model file), kept in a room of their own so the hook
module stays readable; the hook inherits them and users call them on the hook."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_metastudio.api import (
    MAX_PAGE_SIZE,
    AssetPage,
    Downloaded,
    aiterate_pages,
    asset_list_call,
    asset_show_call,
    iterate_pages,
    parse_asset,
    parse_asset_page,
    verify_download,
)
from airflow_provider_metastudio.assets import AssetFile, DigitalAsset
from airflow_provider_metastudio.config import MetaStudioConnectionConfig
from airflow_provider_metastudio.exceptions import MetaStudioInvalidResponseError, MetaStudioValidationError
from airflow_provider_metastudio.transport import Transport, signed_url_call


class DigitalAssetCalls:
    """The asset library's calls; the hook provides the transport, the base URL and the config."""

    if TYPE_CHECKING:  # provided by MetaStudioHook

        @property
        def transport(self) -> Transport: ...

        @property
        def _base(self) -> str: ...

        async def _atransport(self) -> Transport: ...

        async def aget_config(self) -> MetaStudioConnectionConfig: ...

    def get_asset(self, asset_id: str) -> DigitalAsset:
        """Return one asset of the library (``GET /v1/{project_id}/digital-assets/{asset_id}``).

        :param asset_id: e.g. a picture-modeling job's ``model_asset_id``.
        """
        return parse_asset(self.transport.request(asset_show_call(self._base, asset_id)), asset_id)

    async def aget_asset(self, asset_id: str) -> DigitalAsset:
        """Async twin of :meth:`get_asset` for triggers."""
        transport = await self._atransport()
        return parse_asset(await transport.arequest(asset_show_call(self._base, asset_id)), asset_id)

    def list_assets_page(self, *, offset: int = 0, limit: int = MAX_PAGE_SIZE, **filters: Any) -> AssetPage:
        """One page of the asset list call; ``filters`` as :meth:`list_assets`."""
        call = asset_list_call(self._base, offset=offset, limit=limit, **filters)
        return parse_asset_page(self.transport.request(call), offset, limit)

    async def alist_assets_page(
        self, *, offset: int = 0, limit: int = MAX_PAGE_SIZE, **filters: Any
    ) -> AssetPage:
        """Async twin of :meth:`list_assets_page`."""
        transport = await self._atransport()
        call = asset_list_call(self._base, offset=offset, limit=limit, **filters)
        return parse_asset_page(await transport.arequest(call), offset, limit)

    def list_assets(
        self,
        *,
        states: Any = None,
        asset_types: Any = None,
        style_id: str | None = None,
        name: str | None = None,
        created_since: datetime | str | None = None,
        created_until: datetime | str | None = None,
        sort_key: str | None = None,
        sort_dir: str | None = None,
        asset_source: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[DigitalAsset]:
        """Yield every asset matching the filters, following offset paging to the end.

        :param states: one ``asset_state`` or several (``AssetState`` or strings).
        :param asset_types: one ``asset_type`` or several, e.g. ``HUMAN_MODEL``.
        :param style_id: assets related to this stylization id, e.g. ``system_female_001``.
        :param name: fuzzy match on the asset name.
        :param created_since: lower time bound (``start_time``; RFC 3339 string or aware datetime).
        :param created_until: upper time bound (``end_time``).
        :param sort_key: ``create_time``, ``update_time`` or ``asset_order``.
        :param sort_dir: ``asc`` or ``desc``.
        :param asset_source: ``SYSTEM``, ``CUSTOMIZATION`` (the service's default) or ``ALL``.
        :param page_size: assets per request, 1-100.
        """
        filters = dict(
            states=states,
            asset_types=asset_types,
            style_id=style_id,
            name=name,
            created_since=created_since,
            created_until=created_until,
            sort_key=sort_key,
            sort_dir=sort_dir,
            asset_source=asset_source,
        )
        asset_list_call(self._base, offset=0, limit=page_size, **filters)  # validate before the first request
        yield from iterate_pages(
            lambda offset: self.list_assets_page(offset=offset, limit=page_size, **filters)
        )

    async def alist_assets(
        self, *, page_size: int = MAX_PAGE_SIZE, **filters: Any
    ) -> AsyncIterator[DigitalAsset]:
        """Async twin of :meth:`list_assets`, with the same keyword filters."""
        await self.aget_config()
        asset_list_call(self._base, offset=0, limit=page_size, **filters)  # validate before the first request
        async for asset in aiterate_pages(
            lambda offset: self.alist_assets_page(offset=offset, limit=page_size, **filters)
        ):
            yield asset

    def download_asset_file(self, file: AssetFile, out: IO[bytes]) -> Downloaded:
        """Stream one asset file through its pre-signed URL into ``out``, verifying size and MD5.

        The URL is a bearer credential valid for 24 hours: it is never logged or put in an error.
        A file without ``file_size`` or a well-formed ``file_md5`` (base64, 24 characters) is
        checked on what it has; the contract promises both.

        :param file: an :class:`AssetFile` of an asset just read with :meth:`get_asset`.
        :param out: a binary file object (a local file or an ``ObjectStoragePath`` opened ``wb``).
        :raises MetaStudioChecksumError: the bytes do not match; the message names the file.
        """
        if not file.download_url:
            raise MetaStudioInvalidResponseError(
                f"Asset file {file.label} has no download_url", call="asset_file"
            )
        try:
            call = signed_url_call("asset_file", file.download_url, "download_url")
        except MetaStudioValidationError:  # its message would quote part of the signed URL
            raise MetaStudioInvalidResponseError(
                f"Asset file {file.label} has a download_url that is not an http(s) URL", call="asset_file"
            ) from None
        refused = (
            f"the download URL of {file.label} is refused; it expires at {file.download_url_expires_at} "
            "(read the asset again for a fresh URL)"
        )
        got = self.transport.download(call, out, refused)
        verify_download(file, got)
        return got
