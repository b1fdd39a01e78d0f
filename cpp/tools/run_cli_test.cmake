# Runs slimedge_aggregate once, as ctest would run any test binary (through the cross
# emulator when there is one), and checks its report or its error.
#   -DPROGRAM=  the program          -DEMULATOR=  emulator command, '|'-separated (may be empty)
#   -DINPUT=    the input file       -DOUT_DIR=   where the report is kept for comparison
#   -DEXPECT=   file the report must equal byte for byte, or
#   -DEXPECT_ERROR= regex the error message must match (and the exit status must be non-zero)
string(REPLACE "|" ";" _emulator "${EMULATOR}")
execute_process(
  COMMAND ${_emulator} ${PROGRAM} ${INPUT}
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err)

if(DEFINED EXPECT)
  if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "exit status ${rc} on ${INPUT}:\n${err}")
  endif()
  get_filename_component(_name "${INPUT}" NAME_WE)
  file(MAKE_DIRECTORY "${OUT_DIR}")
  file(WRITE "${OUT_DIR}/${_name}.txt" "${out}")
  file(READ "${EXPECT}" want)
  if(NOT out STREQUAL want)
    message(FATAL_ERROR "report for ${INPUT} differs from ${EXPECT}:\n"
      "--- got\n${out}--- want\n${want}")
  endif()
  string(LENGTH "${out}" _len)
  message(STATUS "report matches ${EXPECT} (${_len} bytes)")
elseif(DEFINED EXPECT_ERROR)
  if(rc STREQUAL "0")
    message(FATAL_ERROR "exit status 0 on bad input ${INPUT}; output:\n${out}")
  endif()
  if(NOT err MATCHES "${EXPECT_ERROR}")
    message(FATAL_ERROR "error for ${INPUT} does not match '${EXPECT_ERROR}':\n${err}")
  endif()
  message(STATUS "exit status ${rc}, error: ${err}")
else()
  message(FATAL_ERROR "pass -DEXPECT=file or -DEXPECT_ERROR=regex")
endif()
