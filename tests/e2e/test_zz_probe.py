async def test_probe(database_env, daemons, http):
    d = daemons.start(database_env)
    await d.wait_ready(http)
    print(database_env)
