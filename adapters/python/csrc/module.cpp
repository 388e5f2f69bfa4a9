// aclora._core: the C++ side of the Python package (see aclora/_core.pyi for the interface).
// One translation unit: the Torch backend's headers are compiled once.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <cstdint>
#include <string>

#include "aclora/backends/torch.hpp"
#include "errors.hpp"
#include "export_binding.hpp"
#include "restart_binding.hpp"

namespace py = pybind11;
using aclora::LossWindow;
using aclora::Schedule;
using aclora::python::RestartBinding;

PYBIND11_MODULE(_core, m) {
  m.doc() = "aclora's C++ core over the Torch backend (use the aclora package, not this module)";
  m.attr("__version__") = ACLORA_VERSION;
  m.attr("torch_build_version") = ACLORA_TORCH_BUILD_VERSION;
  aclora::python::register_error_translation();

  py::class_<Schedule>(m, "Schedule")
      .def(py::init([](int total_epochs, int restart_interval) {
             const Schedule schedule{total_epochs, restart_interval};
             static_cast<void>(schedule.due(0));  // validates N and E
             return schedule;
           }),
           py::arg("total_epochs") = 100, py::arg("restart_interval") = 10)
      .def_readonly("total_epochs", &Schedule::total_epochs)
      .def_readonly("restart_interval", &Schedule::restart_interval)
      .def("alpha", &Schedule::alpha, py::arg("epoch"))
      .def("due", &Schedule::due, py::arg("epoch"))
      .def("threshold", &Schedule::threshold, py::arg("mean_loss"), py::arg("epoch"))
      .def("__eq__",
           [](const Schedule& a, const Schedule& b) {
             return a.total_epochs == b.total_epochs && a.restart_interval == b.restart_interval;
           })
      .def("__repr__",
           [](const Schedule& s) {
             return "Schedule(total_epochs=" + std::to_string(s.total_epochs) +
                    ", restart_interval=" + std::to_string(s.restart_interval) + ")";
           })
      .def(py::pickle(
          [](const Schedule& s) { return py::make_tuple(s.total_epochs, s.restart_interval); },
          [](const py::tuple& t) {
            return Schedule{t[0].cast<int>(), t[1].cast<int>()};
          }));

  m.def("threshold_from_loss", &aclora::threshold_from_loss, py::arg("mean_loss"),
        py::arg("alpha"));

  py::class_<LossWindow>(m, "LossWindow")
      .def(py::init<>())
      .def("record", &LossWindow::record, py::arg("loss"))
      .def("mean", &LossWindow::mean)
      .def("clear", &LossWindow::clear)
      .def("__len__", &LossWindow::count)
      .def("__repr__", [](const LossWindow& w) {
        return "LossWindow(count=" + std::to_string(w.count()) + ")";
      });

  py::class_<RestartBinding>(m, "Restart")
      .def(py::init<std::uint64_t, const std::string&, std::size_t, std::int64_t>(),
           py::arg("seed"), py::arg("noise"), py::arg("min_rank"), py::arg("chunk_elements"))
      .def("scheduled", &RestartBinding::scheduled, py::arg("modules"), py::arg("total_epochs"),
           py::arg("epoch"), py::arg("mean_loss"))
      .def("at_threshold", &RestartBinding::at_threshold, py::arg("modules"), py::arg("threshold"))
      .def_property("restart_count", &RestartBinding::restart_count,
                    &RestartBinding::set_restart_count)
      .def_property_readonly("seed", &RestartBinding::seed)
      .def_property_readonly("noise", &RestartBinding::noise)
      .def_property_readonly("min_rank", &RestartBinding::min_rank)
      .def_property_readonly("last_core_seconds", &RestartBinding::last_core_seconds);

  m.def("factors_at_rank", &aclora::python::factors_at_rank, py::arg("name"), py::arg("down"),
        py::arg("up"), py::arg("rank"));
  m.def("update_singular_values", &aclora::python::update_singular_values, py::arg("name"),
        py::arg("down"), py::arg("up"));
  m.def("write_lora", &aclora::python::write_lora, py::arg("format"), py::arg("modules"),
        py::arg("path"), py::arg("dtype"), py::arg("metadata"), py::arg("title"), py::arg("sdxl"),
        py::arg("uniform_alpha"));
  m.def("kohya_name", &aclora::python::kohya_name, py::arg("component"), py::arg("path"));
}
