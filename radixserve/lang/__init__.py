"""SGLang's module paths for its frontend language, so `from sglang.lang.ir import REGEX_INT`
ports as `from radixserve.lang.ir import REGEX_INT`. The language itself is `frontend_lang/`."""
