#pragma once
/// @file
/// @brief aclora's small strict JSON layer: Value (null, boolean, number,
/// string, array, object), parse() and dump(). Used for safetensors headers,
/// safetensors metadata values and adapter_config.json.
///
/// @code
/// aclora::json::Value config = aclora::json::parse(text);
/// if (const auto* r = config.find("r")) rank = r->as_int();
/// std::string out = aclora::json::dump(config, 2);
/// @endcode

#include "aclora/adapters/json/dump.hpp"
#include "aclora/adapters/json/parse.hpp"
#include "aclora/adapters/json/printable.hpp"
#include "aclora/adapters/json/utf8.hpp"
#include "aclora/adapters/json/value.hpp"
