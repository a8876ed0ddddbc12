async def run(mongo_url: str, namespace: str) -> dict:
    raise NotImplementedError
