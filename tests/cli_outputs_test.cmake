# The CLI never costs the user a file, and refuses bad command-line values
# with exit code 2 and a message naming the value. Each data-loss case that
# once deleted files runs here in a scratch folder holding the user's files.
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT}/work/mine)
file(WRITE ${OUT}/work/thesis.txt "chapter 1")
file(WRITE ${OUT}/work/mine/thesis.txt "chapter 2")
set(M ${FIX}/lenet)
set(RUN0 attribute --model ${M}/model.onnx --split split --input ${M}/x.npy --baseline zeros -n 4)
set(RUN ${RUN0} --class 5)

function(run expect_rc needle)
  execute_process(COMMAND ${EXE} ${ARGN} WORKING_DIRECTORY ${OUT}/work RESULT_VARIABLE rc OUTPUT_VARIABLE o
                  ERROR_VARIABLE e)
  if(NOT rc EQUAL expect_rc)
    message(FATAL_ERROR "'${ARGN}': exit code ${rc}, expected ${expect_rc}: ${o}${e}")
  endif()
  string(FIND "${o}${e}" "${needle}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "'${ARGN}': output lacks '${needle}': ${o}${e}")
  endif()
endfunction()
function(user_files_intact case)
  foreach(f thesis.txt mine/thesis.txt)
    if(NOT EXISTS ${OUT}/work/${f})
      message(FATAL_ERROR "${case}: the user's ${f} is gone")
    endif()
  endforeach()
  file(GLOB left ${OUT}/work/.*partial* ${OUT}/work/.*old* ${OUT}/.*partial*)
  if(left)
    message(FATAL_ERROR "${case}: left temporary folders behind: ${left}")
  endif()
endfunction()

run(1 "contains the current folder" ${RUN} -o .)
user_files_intact("-o .")
run(1 "contains the current folder" ${RUN} -o ..)
user_files_intact("-o ..")
run(1 "root folder" ${RUN} -o /)
run(1 "exists and is not a folder" ${RUN} -o thesis.txt)
user_files_intact("-o FILE")
run(1 "did not write (for example 'thesis.txt')" ${RUN} -o mine/)
user_files_intact("-o DIR/ holding the user's file")
run(0 "wrote" ${RUN} -o newdir/)
if(NOT EXISTS ${OUT}/work/newdir/report.json OR NOT EXISTS ${OUT}/work/newdir/.ipna-fast-output)
  message(FATAL_ERROR "-o newdir/ did not write newdir/")
endif()
# No --box: no box pictures.
if(EXISTS ${OUT}/work/newdir/ig_overlay_box.png OR NOT EXISTS ${OUT}/work/newdir/ig_overlay.png)
  message(FATAL_ERROR "without --box: box pictures written, or the plain ones missing")
endif()
# A failing run over an earlier output keeps it.
file(READ ${OUT}/work/newdir/report.json before)
run(1 "out of range" ${RUN0} --class 99 -o newdir)
file(READ ${OUT}/work/newdir/report.json after)
if(NOT before STREQUAL after)
  message(FATAL_ERROR "a failed run changed the earlier output")
endif()
run(0 "wrote" ${RUN} -o newdir)  # its own earlier output is replaced
run(0 "wrote" ${RUN} -o mine --overwrite)
if(EXISTS ${OUT}/work/mine/thesis.txt OR NOT EXISTS ${OUT}/work/mine/report.json)
  message(FATAL_ERROR "--overwrite did not replace mine/")
endif()
file(WRITE ${OUT}/work/mine/thesis.txt "chapter 2")
user_files_intact("after the runs")

# Bad values: exit 2, named.
set(T ${FIX}/tiny224)
file(READ ${FIX}/images/files.json files)
string(JSON IMG GET ${files} landscape.png)
run(2 "Y (the class, second argument): expected an integer, got 'three'"
    main ${IMG} three ${T}/first.onnx ${T}/second.onnx 45 100 90 130 -o o1)
run(2 "X2 (a box coordinate): expected an integer, got '9x'" main ${IMG} 3 ${T}/first.onnx ${T}/second.onnx 45 100 9x 130 -o o1)
run(2 "--fractions: expected a number, got '0.5x'" curve --model ${M}/model.onnx --split split --input ${M}/x.npy
    --class 5 --box 7 9 16 26 --fractions 0,0.5x -o o2)
run(2 "--chunk" ${RUN} --chunk 0 -o o3)
run(2 "--memory-budget" ${RUN} --memory-budget -5 -o o3)
run(2 "--baseline: expected black, zeros or a .npy file, got 'zero'"
    attribute --model ${M}/model.onnx --split split --input ${M}/x.npy --baseline zero --class 5 -o o3)
# An input or baseline of the wrong shape names its file and the expected shape.
execute_process(COMMAND /usr/bin/python3 -c "import numpy as np; np.save('${OUT}/hwc.npy', np.zeros((28,28,1), np.float32)); np.save('${OUT}/small.npy', np.zeros((1,10,10), np.float32))")
run(1 "hwc.npy (the input): shape [28,28,1] does not match the model input: expected [1,28,28] or [1,1,28,28]"
    attribute --model ${M}/model.onnx --split split --input ${OUT}/hwc.npy --class 5 -o o4)
run(1 "small.npy (the baseline): shape [1,10,10]" attribute --model ${M}/model.onnx --split split --input ${M}/x.npy
    --baseline ${OUT}/small.npy --class 5 -o o4)
foreach(o o1 o2 o3 o4)
  if(EXISTS ${OUT}/work/${o})
    message(FATAL_ERROR "a refused run left ${o}")
  endif()
endforeach()
# info marks the tensors inside residual blocks.
run(0 "- " info ${FIX}/resnet18/model.onnx)
message(STATUS "cli_outputs: data-loss and bad-value checks passed")

# Ctrl-C stops a long run at the next chunk: exit code 130, no output folder, no temporary folder.
string(TIMESTAMP t0 "%s")
execute_process(COMMAND timeout --preserve-status -s INT 3 ${EXE} class-window --images 1000 -n 64 -o ${OUT}/work/interrupted
                WORKING_DIRECTORY ${OUT}/work RESULT_VARIABLE rc OUTPUT_VARIABLE o ERROR_VARIABLE e)
string(TIMESTAMP t1 "%s")
math(EXPR took "${t1} - ${t0}")
if(NOT rc EQUAL 130 OR took GREATER 15 OR EXISTS ${OUT}/work/interrupted)
  message(FATAL_ERROR "Ctrl-C: exit code ${rc} after ${took} s (expected 130, promptly, nothing written): ${o}${e}")
endif()
user_files_intact("Ctrl-C")
message(STATUS "cli_outputs: Ctrl-C stopped the run in ${took} s")

# The same interrupt twice in quick succession (as `timeout` and job controllers send it, to the
# process and then to its group), both inside one long chunk of steps: the repeat must not end the
# process before it cleans up: exit code 130, no output folder, no temporary folder.
execute_process(COMMAND bash -c "\"$0\" attribute --model \"$1/resnet18/model.onnx\" --split layer2 --input \"$1/resnet18/x.npy\" --class 1 -n 1024 --chunk 1024 --no-conductance -o \"$2\" & p=$!; sleep 1.5; kill -INT $p; sleep 0.5; kill -INT $p; wait $p"
                        ${EXE} ${FIX} ${OUT}/work/interrupted_twice
                WORKING_DIRECTORY ${OUT}/work RESULT_VARIABLE rc OUTPUT_VARIABLE o ERROR_VARIABLE e)
if(NOT rc EQUAL 130 OR EXISTS ${OUT}/work/interrupted_twice)
  message(FATAL_ERROR "Ctrl-C twice in quick succession: exit code ${rc} (expected 130, nothing written): ${o}${e}")
endif()
user_files_intact("Ctrl-C twice in quick succession")
message(STATUS "cli_outputs: the same interrupt twice in quick succession let the run clean up")
