"""Package layout that pyproject.toml cannot state: the SQL models ship inside the package.

The models stay in ``dbt_like_sql/`` at the repository root (where people edit them); the package-dir mapping
installs them as ``aion_assets/sql_models/sql/*.sql``, so an installed wheel (a container image) finds them through
``importlib.resources`` without the repository. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

PACKAGED_SQL = "aion_assets.sql_models.sql"

setup(
    include_package_data=False,  # exactly the package_data below
    packages=[*find_packages(include=["aion_assets*"]), PACKAGED_SQL],
    package_dir={PACKAGED_SQL: "dbt_like_sql"},
    # The prompts folder is data of aion_assets.vlm, the page's files of aion_assets.app: not packages of their own.
    package_data={"": ["*.txt", "*.json", "*.sql", "*.html", "*.yaml"], "aion_assets.vlm": ["prompts/*.txt"],
                  "aion_assets.app": ["static/*.html", "static/*.js", "static/*.css"], PACKAGED_SQL: ["*.sql"]},
)
