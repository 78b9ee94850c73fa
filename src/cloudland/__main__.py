from cloudland.cli.main import run

run()
