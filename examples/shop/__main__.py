"""``python -m examples.shop``: create the tables in ./shop.db and run the scenario."""
from .scenario import run

if __name__ == "__main__":
    run()
