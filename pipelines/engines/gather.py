"""`gather_or_cancel`: the requests of one prompt or unit, where one failure cancels the rest.

    results = await gather_or_cancel([engine.generate(...) for ...])

Used by the unit runner (a unit's prompts) and the API engine (a prompt's
requests when the server does not support `n`).
"""

from __future__ import annotations

import asyncio


async def gather_or_cancel(coros: list) -> list:
    """`asyncio.gather`, except that the first exception cancels the others before it propagates."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
