"""Maps the top-level folders onto subpackages of `radixserve` (see pyproject.toml)."""

from setuptools import find_packages, setup

SUBPACKAGE_FOLDERS = ("runtime", "radix_cache", "frontend_lang", "kernels", "utils")

package_dir = {"radixserve": "radixserve"}
packages = ["radixserve", "radixserve.lang"]  # lang/: SGLang's module paths
for folder in SUBPACKAGE_FOLDERS:
    package_dir[f"radixserve.{folder}"] = folder
    packages.append(f"radixserve.{folder}")
    packages += [f"radixserve.{folder}.{sub}" for sub in find_packages(folder)]

# The dashboard page the server serves (runtime/server/http/static/) and the C sources of the
# CPU kernels, which the installed package compiles on first use (kernels/cpu/small_gemm.py).
package_data = {
    "radixserve.runtime.server.http": ["static/*.html"],
    "radixserve.kernels.cpu": ["native/*.c", "native/*.h"],  # compiled on first use
}
setup(package_dir=package_dir, packages=packages, package_data=package_data)
